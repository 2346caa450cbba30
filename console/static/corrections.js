/* 错题本页：客服记下的纠正（GET /api/desk/corrections），主管 / 管理员另有模型训练面板：
 * 用错题本重新训练（POST /api/desk/training）、模型列表与测试结果对比、训练日志、启用模型
 * （POST /api/desk/training/{id}/activate）。训练进行中每 3 秒刷新一次。 */
(function () {
  "use strict";

  var D = window.SiyuDesk;
  var CFG = D.CFG;
  var $ = D.$, h = D.h, tag = D.tag, when = D.when, api = D.api, toast = D.toast;
  var MODEL_STATES = {training: ["训练中", "primary"], ready: ["待启用", "warning"], failed: ["失败", "danger"],
                      active: ["使用中", "success"], retired: ["已停用", "info"]};
  var SETS = [["corrections", "错题本"], ["field_set", "现场测试集"]];
  var POLL_MS = 3000;

  var state = {corrections: [], staff: {}, models: [], open: {}, pollTimer: null, listSeq: 0};

  function staffName(username) { return state.staff[username] || username || ""; }

  // a <details> keeps whether the reader opened it across the re-renders of polling
  function keep(details, key, openByDefault) {
    details.open = state.open[key] !== undefined ? state.open[key] : !!openByDefault;
    details.addEventListener("toggle", function () { state.open[key] = details.open; });
    return details;
  }

  // ---- the 错题本 --------------------------------------------------------------------------------
  function loadCorrections() {
    var seq = ++state.listSeq;
    return api("GET", "/api/desk/corrections").then(function (result) {
      if (seq !== state.listSeq) { return; }
      state.corrections = result.data.corrections || [];
      renderCorrections();
    }).catch(function (error) {
      D.fill($("corrections-body"), h("tr", {}, h("td", {colspan: "6", "class": "empty",
                                                          text: "错题本加载失败：" + error.message})));
    });
  }

  function matches(c, q, kind) {
    if (kind === "intent" && !c.right_intent) { return false; }
    if (kind === "kb" && !c.kb_correction_id) { return false; }
    if (!q) { return true; }
    return [c.text, c.wrong_intent, c.right_intent, D.intentLabel(c.wrong_intent), D.intentLabel(c.right_intent),
            c.staff, staffName(c.staff)].some(function (v) { return v && String(v).toLowerCase().indexOf(q) >= 0; });
  }

  function intentCell(c) {
    var wrong = c.wrong_intent ? h("span", {"class": "intent-name wrong", title: c.wrong_intent,
                                            text: D.intentLabel(c.wrong_intent, true)})
                               : h("span", {"class": "muted", text: "未识别"});
    if (!c.right_intent) { return [wrong, h("span", {"class": "muted small", text: "（意图未改）"})]; }
    return [wrong, h("span", {"class": "arrow", text: "→"}),
            h("span", {"class": "intent-name right", title: c.right_intent, text: D.intentLabel(c.right_intent, true)})];
  }

  function renderCorrections() {
    var q = $("corrections-q").value.trim().toLowerCase();
    var kind = $("corrections-kind").value;
    var shown = state.corrections.filter(function (c) { return matches(c, q, kind); });
    $("corrections-count").textContent = state.corrections.length;
    var rows = shown.map(function (c) {
      return h("tr", {dataset: {id: c.id}},
        h("td", {"class": "col-time muted", text: when(c.at), title: c.at}),
        h("td", {"class": "col-text"}, h("span", {"class": "said", text: c.text})),
        h("td", {"class": "col-intent"}, intentCell(c)),
        h("td", {"class": "col-kb"}, c.kb_correction_id ? tag("知识库纠正 #" + c.kb_correction_id, "primary")
                                                        : h("span", {"class": "muted", text: "—"})),
        h("td", {"class": "col-staff", text: staffName(c.staff)}),
        h("td", {"class": "col-conv"}, c.conversation ? h("a", {href: "/desk/#c=" + c.conversation, title: "打开会话",
                                                                text: "#" + c.conversation})
                                                      : h("span", {"class": "muted", text: "—"})));
    });
    if (!rows.length) {
      rows = [h("tr", {}, h("td", {colspan: "6", "class": "empty", text: state.corrections.length ?
        "没有符合筛选条件的记录" : "错题本还是空的：在会话记录中点击“答错了”添加"}))];
    }
    D.fill($("corrections-body"), rows);
  }

  function loadStaff() {
    return api("GET", "/api/desk/staff").then(function (result) {
      (result.data.staff || []).forEach(function (p) { state.staff[p.username] = p.display_name || p.username; });
      renderCorrections();
      if (state.models.length) { renderModels(); }
    }).catch(function () { /* user names then */ });
  }

  // ---- training ----------------------------------------------------------------------------------
  function training() {
    return state.models.some(function (m) { return m.state === "training"; });
  }

  function loadModels() {
    clearTimeout(state.pollTimer);
    return api("GET", "/api/desk/training").then(function (result) {
      var wasTraining = training();
      state.models = result.data.models || [];
      renderModels();
      if (wasTraining && !training()) {
        var latest = state.models[0];
        if (latest && latest.state === "ready") { toast("训练完成：模型 #" + latest.id + " 可以对比后启用", "success"); }
        else if (latest && latest.state === "failed") { toast("训练失败：模型 #" + latest.id + "，见训练日志", "error"); }
      }
    }).catch(function (error) {
      if (!state.models.length) { D.fill($("models"), h("p", {"class": "empty", text: "模型列表加载失败：" + error.message})); }
    }).then(function () {
      if (training()) { state.pollTimer = setTimeout(loadModels, POLL_MS); }
    });
  }

  function startTraining() {
    var button = $("btn-train");
    button.disabled = true;
    api("POST", "/api/desk/training").then(function (result) {
      toast("已开始训练（模型 #" + result.data.id + "），通常需要一两分钟", "info");
      state.open[result.data.id] = true;
      loadModels();
    }).catch(function (error) {
      D.failed(error);
      loadModels();
    });
  }

  function activate(model) {
    D.confirm("启用模型 #" + model.id,
      h("div", {"class": "confirm-text"},
        h("p", {}, "启用后机器人约 10 秒内切换到模型 ", h("strong", {text: model.model || ("#" + model.id)}),
          "，所有渠道的顾客消息都由它理解。"),
        h("p", {"class": "muted small", text: "之前使用的模型会标为“已停用”，需要时可重新训练后再启用。"})),
      "启用", false).then(function (yes) {
      if (!yes) { return; }
      api("POST", "/api/desk/training/" + model.id + "/activate").then(function () {
        toast("模型 #" + model.id + " 已启用，机器人约 10 秒内切换", "success");
        loadModels();
      }).catch(function (error) { D.failed(error); loadModels(); });
    });
  }

  function shortName(name) { return name ? String(name).replace(/\.tar\.gz$/, "") : ""; }

  function accuracyCell(score, other) {
    if (!score) { return h("td", {"class": "muted", text: "—"}); }
    var diff = null;
    if (other && score.accuracy !== null && other.accuracy !== null && other.accuracy !== undefined &&
        score.accuracy !== other.accuracy) {
      var up = score.accuracy > other.accuracy;
      diff = h("span", {"class": "diff " + (up ? "up" : "down"), text: up ? " ▲" : " ▼"});
    }
    return h("td", {"class": "num"}, h("strong", {text: D.percent(score.accuracy)}), diff,
             h("span", {"class": "muted small", text: "（" + (score.examples || 0) + " 条）"}));
  }

  function wrongList(score, title) {
    var wrong = (score && score.wrong) || [];
    var items = wrong.map(function (w) {
      return h("li", {}, h("span", {"class": "said", text: w.text}),
        h("span", {"class": "small"}, h("span", {"class": "muted", text: " 应为 "}), D.intentLabel(w.expected, true),
          h("span", {"class": "muted", text: "，识别成 "}), h("span", {"class": "wrong", text: D.intentLabel(w.got, true)})));
    });
    return h("div", {"class": "wrong-col"}, h("div", {"class": "wrong-title", text: title}),
             items.length ? h("ul", {"class": "wrong-list"}, items)
                          : h("p", {"class": "muted small", text: score && score.examples ? "全部正确" : "没有例子"}));
  }

  function results(model) {
    var r = model.results || {};
    if (!r.candidate) { return null; }
    var current = r.current || null;
    var head = h("tr", {}, h("th", {text: "测试"}),
      h("th", {}, "新模型", h("div", {"class": "muted small mono model-name", title: model.model || "",
                                     text: shortName(model.model) || ""})),
      h("th", {}, "当前模型", h("div", {"class": "muted small mono model-name", title: r.current_model || "",
                                      text: shortName(r.current_model) || "（无）"})));
    var rows = SETS.map(function (set) {
      var mine = r.candidate[set[0]];
      var theirs = current ? current[set[0]] : null;
      return h("tr", {dataset: {set: set[0]}}, h("th", {text: set[1] + "准确率"}), accuracyCell(mine, theirs),
               accuracyCell(theirs, null));
    });
    var table = h("table", {"class": "table compare"}, h("thead", {}, head), h("tbody", {}, rows));
    var wrongCount = SETS.reduce(function (n, set) {
      return n + (((r.candidate[set[0]] || {}).wrong || []).length) + (current ? ((current[set[0]] || {}).wrong || []).length : 0);
    }, 0);
    var examples = keep(h("details", {"class": "wrong-examples"}, h("summary", {text: "答错的例子（" + wrongCount + "）"}),
      SETS.map(function (set) {
        return h("div", {"class": "wrong-set"}, h("div", {"class": "wrong-set-title", text: set[1]}),
          h("div", {"class": "wrong-cols"}, wrongList(r.candidate[set[0]], "新模型"),
            wrongList(current ? current[set[0]] : null, "当前模型")));
      })), model.id + ":wrong", false);
    return h("div", {"class": "results"},
      r.same_as_current ? h("p", {"class": "notice", text: "训练结果与当前模型相同（训练数据没有变化）。"}) : null,
      table, examples);
  }

  function modelCard(model) {
    var look = MODEL_STATES[model.state] || [model.state, "info"];
    var meta = [model.created_by ? "由 " + staffName(model.created_by) + " 发起" : null, when(model.created_at)];
    if (model.finished_at) { meta.push("完成 " + when(model.finished_at)); }
    if (model.activated_by) { meta.push(staffName(model.activated_by) + " 启用"); }
    var running = model.state === "training";
    var head = h("div", {"class": "model-head"},
      h("strong", {text: "#" + model.id}), tag(look[0], look[1]),
      running ? h("span", {"class": "spinner", "aria-hidden": "true"}) : null,
      model.model ? h("span", {"class": "mono small", text: model.model}) : null,
      h("span", {"class": "muted small model-meta", text: meta.filter(Boolean).join(" · ")}));
    var actions = model.state === "ready" ? h("button", {type: "button", "class": "btn btn-primary btn-xs activate-btn",
      text: "启用此模型", onclick: function (event) { event.preventDefault(); activate(model); }}) : null;
    var body = [
      running ? h("p", {"class": "muted small", text: "正在重建知识库索引、训练并测试新模型，完成后自动显示结果…"}) : null,
      results(model),
      model.log ? keep(h("details", {"class": "log"}, h("summary", {text: "训练日志（末尾）"}),
                         h("pre", {"class": "log-tail", text: model.log})), model.id + ":log", running || model.state === "failed") : null];
    var card = h("details", {"class": "model model-" + model.state, dataset: {id: model.id, state: model.state}},
      h("summary", {}, head, actions), h("div", {"class": "model-body"}, body));
    return keep(card, model.id, model === state.models[0] || running || model.state === "ready");
  }

  function renderModels() {
    var box = $("models");
    var button = $("btn-train");
    button.disabled = training();
    button.textContent = training() ? "训练中…" : "用错题本重新训练";
    if (!state.models.length) {
      D.fill(box, h("p", {"class": "empty", text: "还没有从控制台训练过模型。"}));
      return;
    }
    D.fill(box, state.models.map(modelCard));
    box.querySelectorAll(".log-tail").forEach(function (pre) { pre.scrollTop = pre.scrollHeight; });
  }

  // ---- wiring ------------------------------------------------------------------------------------
  function init() {
    var filterTimer = null;
    $("corrections-q").addEventListener("input", function () {
      clearTimeout(filterTimer);
      filterTimer = setTimeout(renderCorrections, 150);
    });
    $("corrections-kind").addEventListener("change", renderCorrections);
    loadStaff();
    loadCorrections();
    if (CFG.supervises && $("training")) {
      $("btn-train").addEventListener("click", startTraining);
      loadModels();
    }
    D.live({
      desk: function (event) { if (event.kind === "corrected") { loadCorrections(); } },
      reconnected: loadCorrections
    });
    setInterval(loadCorrections, 60000);
  }

  init();
}());
