/* SOP 计划页：计划列表（GET /api/sop/plans，每 10 秒刷新）、最近的发送失败（GET /api/sop/failures）、
 * 暂停 / 启用（POST /api/sop/plans/{id}/active）、删除，以及新建 / 编辑计划的抽屉：目标群、时间规则、
 * 有效期、发送方式、内容块、按标签的不同文案。编辑时（停顿 0.5 秒后）调用 POST /api/sop/preview，
 * 按群显示每个群将收到的内容、问题和提醒。保存：POST /api/sop/plans 或 PUT /api/sop/plans/{id}。 */
(function () {
  "use strict";

  var D = window.SiyuDesk;
  var S = window.SiyuSop;
  var $ = D.$, h = D.h, api = D.api, toast = D.toast;

  var BLOCKS = {
    text: {name: "文字", fields: [["text", "文字", "textarea", "可使用变量 {群名} {日期} {星期} {群主}", 2000]]},
    image: {name: "图片", fields: [["url", "图片链接", "url", "https://…（jpg / png）", 1000]]},
    link: {name: "链接", fields: [["title", "标题", "text", "链接卡片的标题", 128], ["url", "链接", "url", "https://…", 1000],
                                ["description", "描述", "text", "可选", 512], ["picurl", "封面图", "url", "可选：https://…", 1000]]},
    miniprogram: {name: "小程序", fields: [["title", "标题", "text", "小程序卡片的标题", 64],
                                         ["appid", "AppID", "text", "wx 开头", 32], ["page", "页面路径", "text", "pages/index/index", 256],
                                         ["pic_media_id", "封面 media_id", "text", "可选", 128]]},
    product: {name: "商品", fields: [["spu", "商品编号", "text", "例如 NZ1001；发送时读取实时价格和库存", 64]]}
  };
  var ORDER = ["text", "image", "link", "miniprogram", "product"];
  var VARIABLES = ["{群名}", "{日期}", "{星期}", "{群主}"];
  var OPTIONAL = {description: 1, picurl: 1, pic_media_id: 1};
  var PREVIEW_DELAY_MS = 500;

  var state = {
    plans: [], failures: [], groups: null, listSeq: 0,
    editing: null,           // the plan id being edited, or null for a new plan
    content: null, variants: [], dirty: false, saving: false,
    lastText: null,          // the text block's textarea last focused (variables go there)
    previewTimer: null, previewSeq: 0
  };

  // ---- the list --------------------------------------------------------------------------------
  function groupsById() { return state.groups ? state.groups.byId : {}; }

  function loadPlans() {
    var seq = ++state.listSeq;
    return api("GET", "/api/sop/plans").then(function (result) {
      if (seq !== state.listSeq) { return; }
      state.plans = result.data.plans || [];
      renderPlans();
    }).catch(function (error) {
      if (seq !== state.listSeq) { return; }
      D.fill($("plans-body"), S.emptyRow(8, "计划加载失败：" + error.message));
    });
  }

  function matches(plan, q, status, delivery) {
    if (status === "active" && !plan.active) { return false; }
    if (status === "paused" && plan.active) { return false; }
    if (delivery && plan.delivery !== delivery) { return false; }
    if (!q) { return true; }
    var words = [plan.name, plan.schedule_text, S.targetText(plan.targets, groupsById())];
    ((plan.targets || {}).chat_ids || []).forEach(function (id) {
      var g = groupsById()[id];
      words.push(id, g && g.name);
    });
    return words.some(function (w) { return w && String(w).toLowerCase().indexOf(q) >= 0; });
  }

  function planRow(plan) {
    var toggle = h("button", {type: "button", "class": "btn btn-xs plan-toggle", text: plan.active ? "暂停" : "启用",
                              onclick: function () { setActive(plan, !plan.active, toggle); }});
    var window_ = [];
    if (plan.starts_at || plan.ends_at) {
      window_.push(h("div", {"class": "muted small", text: "有效期 " + (plan.starts_at ? (S.parts(plan.starts_at) || {}).date : "…") +
                                                     " 至 " + (plan.ends_at ? (S.parts(plan.ends_at) || {}).date : "…")}));
    }
    return h("tr", {"class": "plan-row", dataset: {id: plan.id, active: plan.active ? "true" : "false", name: plan.name}},
      h("td", {"class": "col-name"}, h("a", {"class": "plan-name", href: "/sop/plans/" + plan.id, text: plan.name}),
        h("div", {"class": "muted small", text: (plan.updated_by || plan.created_by || "") +
                                                (plan.updated_at ? " 更新于 " + S.fmt(plan.updated_at) : "")})),
      h("td", {"class": "col-targets"}, S.targetText(plan.targets, groupsById(), plan.targets_count)),
      h("td", {"class": "col-schedule"}, h("span", {text: plan.schedule_text || ""}), window_),
      h("td", {}, S.deliveryTag(plan.delivery)),
      h("td", {"class": "col-next"}, plan.next_due ? h("span", {text: S.fmt(plan.next_due), title: plan.next_due})
                                                   : h("span", {"class": "muted", text: "—"})),
      h("td", {}, plan.active ? D.tag("启用", "success") : D.tag("已暂停", "info")),
      h("td", {"class": "col-runs"}, S.runCounts(plan.runs)),
      h("td", {"class": "col-actions"},
        h("button", {type: "button", "class": "btn btn-xs plan-edit", text: "编辑", onclick: function () { openEditor(plan.id); }}),
        toggle,
        h("a", {"class": "btn btn-xs plan-runs", href: "/sop/plans/" + plan.id, text: "执行记录"}),
        h("button", {type: "button", "class": "btn btn-xs btn-danger-plain plan-delete", text: "删除",
                     onclick: function () { removePlan(plan); }})));
  }

  function renderPlans() {
    var q = $("plans-q").value.trim().toLowerCase();
    var status = $("plans-status").value;
    var delivery = $("plans-delivery").value;
    var shown = state.plans.filter(function (p) { return matches(p, q, status, delivery); });
    $("plans-count").textContent = state.plans.length;
    var rows = shown.map(planRow);
    if (!rows.length) {
      rows = [S.emptyRow(8, state.plans.length ? "没有符合筛选条件的计划" : "还没有计划：点击“新建计划”开始")];
    }
    D.fill($("plans-body"), rows);
  }

  function setActive(plan, active, button) {
    button.disabled = true;
    api("POST", "/api/sop/plans/" + plan.id + "/active", {active: active}).then(function () {
      toast(active ? "已启用「" + plan.name + "」" : "已暂停「" + plan.name + "」", "success");
      return loadPlans();
    }).catch(function (error) { button.disabled = false; D.failed(error); });
  }

  function removePlan(plan) {
    D.confirm("删除计划", "删除「" + plan.name + "」后不再发送，已有的执行记录保留。确定删除吗？", "删除", true).then(function (ok) {
      if (!ok) { return; }
      api("DELETE", "/api/sop/plans/" + plan.id).then(function () {
        toast("已删除「" + plan.name + "」", "success");
        return loadPlans();
      }).catch(D.failed);
    });
  }

  // ---- failures at a glance --------------------------------------------------------------------
  function planIdOf(run) {
    if (run.plan_id) { return run.plan_id; }
    var plan = state.plans.filter(function (p) { return p.name === run.plan_name; })[0];
    return plan ? plan.id : null;
  }

  function loadFailures() {
    return api("GET", "/api/sop/failures").then(function (result) {
      state.failures = result.data.runs || [];
      renderFailures();
    }).catch(function () { /* the list still works; the banner waits for the next round */ });
  }

  function renderFailures() {
    var runs = state.failures;
    $("failures-banner").hidden = !runs.length;
    $("failures-count").textContent = runs.length;
    D.fill($("failures-list"), runs.slice(0, 20).map(function (run) {
      var id = planIdOf(run);
      var retry = h("button", {type: "button", "class": "btn btn-xs failure-retry", text: "重试"});
      retry.addEventListener("click", function () {
        retry.disabled = true;
        api("POST", "/api/sop/runs/" + run.id + "/retry").then(function () {
          toast("已重新安排发送：" + (run.group_name || run.chat_id), "success");
          loadFailures();
          loadPlans();
        }).catch(function (error) { retry.disabled = false; D.failed(error); });
      });
      return h("li", {"class": "failure", dataset: {id: run.id}},
        h("span", {"class": "muted", text: S.fmt(run.due_at)}),
        id ? h("a", {href: "/sop/plans/" + id, text: run.plan_name || ("计划 #" + id)}) : h("strong", {text: run.plan_name || ""}),
        h("span", {text: run.group_name || run.chat_id}),
        h("span", {"class": "failure-reason", text: run.reason || "原因未知"}),
        retry);
    }));
  }

  // ---- the editor: content blocks --------------------------------------------------------------
  function blankBlock(type) {
    var block = {type: type};
    BLOCKS[type].fields.forEach(function (f) { block[f[0]] = ""; });
    return block;
  }

  function insertVariable(variable, fallbackEditor) {
    var area = state.lastText && fallbackEditor.list.contains(state.lastText) ? state.lastText : null;
    if (!area) {
      area = fallbackEditor.list.querySelector("textarea.block-field");
      if (!area) { fallbackEditor.add("text"); area = fallbackEditor.list.querySelector("textarea.block-field"); }
    }
    var start = area.selectionStart !== undefined && document.activeElement === area ? area.selectionStart : area.value.length;
    var end = area.selectionEnd !== undefined && document.activeElement === area ? area.selectionEnd : area.value.length;
    area.value = area.value.slice(0, start) + variable + area.value.slice(end);
    area.focus();
    area.setSelectionRange(start + variable.length, start + variable.length);
    area.dispatchEvent(new Event("input", {bubbles: true}));
  }

  /* A list of content blocks editing `blocks` in place: add (文字 / 图片 / 链接 / 小程序 / 商品), move, remove,
   * variables into the last text. Returns {el, list, add, render}. */
  function blockEditor(blocks, label) {
    var list = h("div", {"class": "blocks", "aria-label": label});
    var editor = {blocks: blocks, list: list};

    function fieldInput(block, field) {
      var key = field[0];
      var attrs = {"class": "input block-field", dataset: {field: key}, placeholder: field[3], maxlength: String(field[4]),
                   "aria-label": BLOCKS[block.type].name + " · " + field[1]};
      var input = field[2] === "textarea" ? h("textarea", Object.assign(attrs, {rows: "3"})) : h("input", Object.assign(attrs, {type: "text"}));
      input.value = block[key] || "";
      // the form's own input listener asks for a new preview
      input.addEventListener("input", function () { block[key] = input.value; });
      if (field[2] === "textarea") {
        input.addEventListener("focus", function () { state.lastText = input; });
      }
      return h("label", {"class": "block-line"}, h("span", {"class": "block-label", text: field[1]}), input);
    }

    function render() {
      D.fill(list, blocks.map(function (block, i) {
        var spec = BLOCKS[block.type] || {name: block.type, fields: []};
        return h("div", {"class": "block", dataset: {type: block.type, index: i}},
          h("div", {"class": "block-head"},
            D.tag((i + 1) + " · " + spec.name, block.type === "text" ? "primary" : "plain"),
            h("span", {"class": "block-tools"},
              h("button", {type: "button", "class": "btn-link block-up", text: "上移", disabled: i === 0,
                           onclick: function () { move(i, -1); }}),
              h("button", {type: "button", "class": "btn-link block-down", text: "下移", disabled: i === blocks.length - 1,
                           onclick: function () { move(i, 1); }}),
              h("button", {type: "button", "class": "btn-link block-remove", text: "删除",
                           onclick: function () { blocks.splice(i, 1); render(); changed(); }}))),
          spec.fields.map(function (f) { return fieldInput(block, f); }));
      }));
      if (!blocks.length) { D.append(list, h("p", {"class": "empty block-empty", text: "还没有内容：在上方添加文字、图片、链接、小程序或商品"})); }
    }

    function move(i, by) {
      var j = i + by;
      if (j < 0 || j >= blocks.length) { return; }
      var block = blocks.splice(i, 1)[0];
      blocks.splice(j, 0, block);
      render();
      changed();
    }

    editor.add = function (type) {
      blocks.push(blankBlock(type));
      render();
      changed();
      var last = list.lastElementChild && list.lastElementChild.querySelector(".block-field");
      if (last) { last.focus(); }
    };
    editor.render = render;

    var tools = h("div", {"class": "block-toolbar"},
      h("span", {"class": "muted small", text: "添加："}),
      ORDER.map(function (type) {
        return h("button", {type: "button", "class": "btn btn-xs add-block", dataset: {type: type}, text: "＋" + BLOCKS[type].name,
                            onclick: function () { editor.add(type); }});
      }),
      h("span", {"class": "toolbar-sep"}),
      h("span", {"class": "muted small", text: "插入变量："}),
      VARIABLES.map(function (v) {
        var button = h("button", {type: "button", "class": "btn btn-xs var-btn", dataset: {"var": v}, text: v,
                                  title: "插入到光标处（最近编辑的文字块）"});
        // keep the text's focus and cursor: act on mousedown, before the textarea blurs
        button.addEventListener("mousedown", function (event) { event.preventDefault(); });
        button.addEventListener("click", function () { insertVariable(v, editor); });
        return button;
      }));
    editor.el = h("div", {"class": "block-editor"}, tools, list);
    render();
    return editor;
  }

  // ---- the editor: variants --------------------------------------------------------------------
  function renderVariants() {
    var tags = state.groups ? state.groups.tags : [];
    D.fill($("variants"), state.variants.map(function (variant, i) {
      var select = h("select", {"class": "input variant-tag", "aria-label": "标签"},
        h("option", {value: "", text: "选择标签…"}),
        tags.concat(variant.group_tag && tags.indexOf(variant.group_tag) < 0 ? [variant.group_tag] : []).map(function (t) {
          return h("option", {value: t, text: t});
        }));
      select.value = variant.group_tag || "";
      select.addEventListener("change", function () { variant.group_tag = select.value; changed(); });
      var editor = blockEditor(variant.content, "「" + (variant.group_tag || "标签") + "」的内容");
      return h("div", {"class": "variant", dataset: {index: i}},
        h("div", {"class": "variant-head"},
          h("span", {"class": "small", text: "群带有标签"}), select, h("span", {"class": "small", text: "时发送："}),
          h("button", {type: "button", "class": "btn-link variant-remove", text: "删除此文案",
                       onclick: function () { state.variants.splice(i, 1); renderVariants(); changed(); }})),
        editor.el);
    }));
  }

  // ---- the editor: the form <-> a plan ---------------------------------------------------------
  function radio(name) {
    var el = document.querySelector("input[name=" + name + "]:checked");
    return el ? el.value : "";
  }

  function setRadio(name, value) {
    document.querySelectorAll("input[name=" + name + "]").forEach(function (el) { el.checked = el.value === value; });
  }

  function showScheduleFields() {
    var kind = $("schedule-kind").value;
    document.querySelectorAll(".sched-field").forEach(function (el) {
      el.hidden = el.dataset.kinds.split(" ").indexOf(kind) < 0;
    });
  }

  function showTargetMode() {
    var byTag = radio("target-mode") === "group_tag";
    $("target-groups-box").hidden = byTag;
    $("target-tag-box").hidden = !byTag;
  }

  function pickedGroups() {
    return Array.prototype.map.call(document.querySelectorAll("#target-groups input.group-check:checked"),
                                    function (el) { return el.value; });
  }

  function renderGroupPicker(chosen) {
    var box = $("target-groups");
    if (!state.groups) { D.fill(box, h("p", {"class": "empty", text: "群列表加载失败"})); return; }
    var groups = state.groups.groups.filter(function (g) { return !g.dissolved || chosen.indexOf(g.chat_id) >= 0; });
    if (!groups.length) { D.fill(box, h("p", {"class": "empty", text: "还没有客户群（企业微信客户群同步后出现在这里）"})); return; }
    D.fill(box, groups.map(function (g) {
      var input = h("input", {type: "checkbox", "class": "group-check", value: g.chat_id, "aria-label": g.name});
      input.checked = chosen.indexOf(g.chat_id) >= 0;
      return h("label", {"class": "group-item", dataset: {chatId: g.chat_id,
                                                           search: [g.name, g.chat_id, g.owner_name, g.owner].concat(g.tags || []).join(" ").toLowerCase()}},
        input,
        h("span", {"class": "group-name", text: g.name || g.chat_id, title: g.chat_id}),
        h("span", {"class": "group-meta"},
          (g.tags || []).map(function (t) { return D.tag(t, "plain"); }),
          h("span", {"class": "muted small", text: (g.members || 0) + " 人"}),
          g.owner_name ? h("span", {"class": "muted small", text: "群主 " + g.owner_name}) : null,
          g.robot ? null : D.tag("无机器人", "warning"),
          g.dissolved ? D.tag("已解散", "danger") : null));
    }));
    filterGroups();
    countPicked();
  }

  function filterGroups() {
    var q = $("groups-q").value.trim().toLowerCase();
    document.querySelectorAll("#target-groups .group-item").forEach(function (el) {
      el.hidden = !!q && el.dataset.search.indexOf(q) < 0;
    });
  }

  function countPicked() {
    var picked = pickedGroups();
    var noRobot = picked.filter(function (id) { var g = groupsById()[id]; return g && !g.robot; }).length;
    $("groups-picked").textContent = "已选 " + picked.length + " 个群" +
      (noRobot && radio("delivery") === "robot" ? "，其中 " + noRobot + " 个群没有机器人，无法用群机器人发送" : "");
  }

  function fillTagSelect(current) {
    var tags = state.groups ? state.groups.tags.slice() : [];
    if (current && tags.indexOf(current) < 0) { tags.push(current); }
    D.fill($("target-tag"), [h("option", {value: "", text: "选择标签…"})].concat(tags.map(function (t) {
      var n = state.groups ? state.groups.groups.filter(function (g) { return !g.dissolved && (g.tags || []).indexOf(t) >= 0; }).length : 0;
      return h("option", {value: t, text: t + "（" + n + " 个群）"});
    })));
    $("target-tag").value = current || "";
  }

  function cleanBlocks(blocks) {
    return blocks.map(function (block) {
      var out = {type: block.type};
      (BLOCKS[block.type] ? BLOCKS[block.type].fields : []).forEach(function (f) {
        var value = block[f[0]];
        value = typeof value === "string" && f[2] !== "textarea" ? value.trim() : value;
        if (OPTIONAL[f[0]] && !value) { return; }
        out[f[0]] = value || "";
      });
      return out;
    });
  }

  function readSchedule() {
    var kind = $("schedule-kind").value;
    var time = $("schedule-time").value;
    if (kind === "once") { return {kind: kind, at: S.localToIso($("schedule-at").value)}; }
    if (kind === "daily") { return {kind: kind, time: time}; }
    if (kind === "weekly") {
      var days = Array.prototype.map.call(document.querySelectorAll("input.weekday:checked"), function (el) { return Number(el.value); });
      return {kind: kind, weekdays: days, time: time};
    }
    if (kind === "cron") { return {kind: kind, expr: $("schedule-cron").value.trim()}; }
    return {kind: kind, days: parseInt($("schedule-days").value, 10), time: time};
  }

  function readPlan() {
    var targets = radio("target-mode") === "group_tag" ? {group_tag: $("target-tag").value} : {chat_ids: pickedGroups()};
    var offset = D.CFG.utc_offset || "+08:00";
    return {
      name: $("plan-name").value.trim(),
      targets: targets,
      schedule: readSchedule(),
      content: cleanBlocks(state.content.blocks),
      variants: state.variants.map(function (v) { return {group_tag: v.group_tag, content: cleanBlocks(v.content)}; }),
      delivery: radio("delivery") || "robot",
      active: $("plan-active").checked,
      starts_at: $("starts-at").value ? $("starts-at").value + "T00:00:00" + offset : null,
      ends_at: $("ends-at").value ? $("ends-at").value + "T23:59:59" + offset : null
    };
  }

  function writePlan(plan) {
    $("plan-name").value = plan.name || "";
    var targets = plan.targets || {chat_ids: []};
    setRadio("target-mode", targets.group_tag ? "group_tag" : "chat_ids");
    renderGroupPicker(targets.chat_ids || []);
    fillTagSelect(targets.group_tag || "");
    showTargetMode();

    var schedule = plan.schedule || {kind: "daily", time: "09:00"};
    $("schedule-kind").value = schedule.kind || "daily";
    $("schedule-time").value = schedule.time || "09:00";
    $("schedule-at").value = schedule.at ? S.isoToLocal(schedule.at) : "";
    $("schedule-cron").value = schedule.expr || "";
    $("schedule-days").value = schedule.days !== undefined ? schedule.days : 1;
    var weekdays = schedule.weekdays || [1, 2, 3, 4, 5];
    document.querySelectorAll("input.weekday").forEach(function (el) { el.checked = weekdays.indexOf(Number(el.value)) >= 0; });
    showScheduleFields();

    $("starts-at").value = plan.starts_at ? (S.parts(plan.starts_at) || {}).date || "" : "";
    $("ends-at").value = plan.ends_at ? (S.parts(plan.ends_at) || {}).date || "" : "";
    setRadio("delivery", plan.delivery || "robot");
    $("plan-active").checked = plan.active !== false;

    state.lastText = null;
    state.content = blockEditor((plan.content || []).map(function (b) { return Object.assign({}, b); }), "默认内容");
    D.fill($("content-editor"), state.content.el);
    state.variants = (plan.variants || []).map(function (v) {
      return {group_tag: v.group_tag, content: (v.content || []).map(function (b) { return Object.assign({}, b); })};
    });
    renderVariants();
    countPicked();
  }

  // ---- the editor: the drawer ------------------------------------------------------------------
  function changed() {
    state.dirty = true;
    $("plan-error").hidden = true;
    schedulePreview();
  }

  function openEditor(id) {
    state.editing = id || null;
    state.dirty = false;
    $("plan-error").hidden = true;
    $("plan-drawer-title").textContent = id ? "编辑计划" : "新建计划";
    $("plan-save").disabled = false;
    resetPreview();
    var ready = state.groups ? Promise.resolve(state.groups) : S.loadGroups().then(function (g) { state.groups = g; return g; });
    var plan = id ? api("GET", "/api/sop/plans/" + id).then(function (result) { return result.data; }) :
      Promise.resolve({name: "", targets: {chat_ids: []}, schedule: {kind: "daily", time: "09:00"},
                       content: [blankBlock("text")], variants: [], delivery: "robot", active: true});
    Promise.all([ready.catch(function () { return null; }), plan]).then(function (results) {
      writePlan(results[1]);
      $("plan-drawer").hidden = false;
      document.addEventListener("keydown", onKey, true);
      $("plan-name").focus();
      if (id) { preview(); }
    }).catch(D.failed);
  }

  function closeEditor(force) {
    if (!force && state.dirty) {
      return D.confirm("放弃修改", "计划还没有保存，确定关闭吗？", "关闭", true).then(function (ok) { if (ok) { closeEditor(true); } });
    }
    $("plan-drawer").hidden = true;
    document.removeEventListener("keydown", onKey, true);
    clearTimeout(state.previewTimer);
    state.previewSeq++;
    if (window.location.hash) { history.replaceState(null, "", window.location.pathname + window.location.search); }
    return Promise.resolve();
  }

  function onKey(event) {
    if (event.key === "Escape" && !document.querySelector("#dialogs .dialog-mask")) {
      event.stopPropagation();
      closeEditor();
    }
  }

  function save() {
    if (state.saving) { return; }
    var plan = readPlan();
    var error = plan.name ? "" : "请填写计划名称";
    if (!error && plan.targets.chat_ids && !plan.targets.chat_ids.length) { error = "请至少选择一个目标群"; }
    if (!error && plan.targets.group_tag === "") { error = "请选择目标群的标签"; }
    if (!error && !plan.content.length) { error = "请至少添加一个内容块"; }
    if (!error && plan.schedule.kind === "once" && !plan.schedule.at) { error = "请选择发送时间"; }
    if (error) { showError(error); return; }
    state.saving = true;
    $("plan-save").disabled = true;
    var request = state.editing ? api("PUT", "/api/sop/plans/" + state.editing, plan) : api("POST", "/api/sop/plans", plan);
    request.then(function (result) {
      var saved = result.data;
      toast((state.editing ? "已保存「" : "已创建「") + saved.name + "」", "success");
      (saved.warnings || []).forEach(function (w) { toast(w, "warning"); });
      closeEditor(true);
      loadPlans();
    }).catch(function (error) {
      if (error.status === 401) { return; }
      showError(error.message);
    }).then(function () {
      state.saving = false;
      $("plan-save").disabled = false;
    });
  }

  function showError(text) {
    $("plan-error").textContent = text;
    $("plan-error").hidden = false;
  }

  // ---- the live preview ------------------------------------------------------------------------
  function resetPreview() {
    $("preview-state").textContent = "";
    $("preview-error").hidden = true;
    $("preview-warnings").hidden = true;
    $("preview-next").hidden = true;
    D.fill($("preview-groups"), h("p", {"class": "empty", text: "选择目标群并填写内容后，这里显示每个群将收到的内容。"}));
  }

  function schedulePreview() {
    clearTimeout(state.previewTimer);
    state.previewTimer = setTimeout(preview, PREVIEW_DELAY_MS);
  }

  function previewable(plan) {
    if (plan.targets.chat_ids && !plan.targets.chat_ids.length) { return "选择目标群后显示预览"; }
    if (plan.targets.group_tag === "") { return "选择标签后显示预览"; }
    if (!plan.content.length) { return "添加内容后显示预览"; }
    return "";
  }

  function preview() {
    clearTimeout(state.previewTimer);
    if ($("plan-drawer").hidden && !state.content) { return; }
    var plan = readPlan();
    var seq = ++state.previewSeq;
    var waiting = previewable(plan);
    if (waiting) {
      resetPreview();
      D.fill($("preview-groups"), h("p", {"class": "empty", text: waiting}));
      return;
    }
    $("preview").classList.add("loading");
    $("preview-state").textContent = "更新中…";
    if (!plan.name) { delete plan.name; }
    api("POST", "/api/sop/preview", plan).then(function (result) {
      if (seq !== state.previewSeq) { return; }
      $("preview-error").hidden = true;
      renderPreview(result.data, plan);
      $("preview-state").textContent = "已更新 " + S.fmt(new Date(), true).replace(/^今天 /, "");
    }).catch(function (error) {
      if (seq !== state.previewSeq) { return; }
      $("preview-error").textContent = error.message;
      $("preview-error").hidden = false;
      $("preview-state").textContent = "计划还不完整";
    }).then(function () {
      if (seq === state.previewSeq) { $("preview").classList.remove("loading"); }
    });
  }

  function cardView(card) {
    var kind = card.type;
    if (kind === "image") {
      return h("div", {"class": "preview-card preview-card-image", dataset: {type: kind}},
        h("span", {"class": "card-icon", "aria-hidden": "true", text: "▨"}),
        h("span", {"class": "card-text"}, h("strong", {text: "图片"}), h("span", {"class": "muted small card-url", text: card.url || ""})));
    }
    if (kind === "miniprogram") {
      return h("div", {"class": "preview-card preview-card-mini", dataset: {type: kind}},
        h("span", {"class": "card-text"}, h("span", {"class": "muted small", text: "小程序"}), h("strong", {text: card.title || ""}),
          h("span", {"class": "muted small card-url", text: (card.appid || "") + " · " + (card.page || "")})));
    }
    return h("div", {"class": "preview-card preview-card-link", dataset: {type: kind}},
      h("span", {"class": "card-text"}, h("strong", {text: card.title || card.url || ""}),
        card.description ? h("span", {"class": "small", text: card.description}) : null,
        h("span", {"class": "muted small card-url", text: card.url || ""})),
      h("span", {"class": "card-icon", "aria-hidden": "true", text: "↗"}));
  }

  function deliveryNote(group, delivery) {
    if (delivery === "mass_send") {
      var attachments = (group.mass_send && group.mass_send.attachments) || [];
      return h("div", {"class": "preview-delivery"}, "企业微信群发：文字" + (attachments.length ? " + " + attachments.length + " 个附件" : "") +
               "，群主在手机上确认后发出");
    }
    if (delivery === "owner_reminder") {
      return h("div", {"class": "preview-delivery"}, h("div", {text: "群主在企业微信收到的提醒："}),
               h("div", {"class": "preview-bubble preview-reminder", text: group.reminder || ""}));
    }
    var robot = group.robot || [];
    return h("div", {"class": "preview-delivery"}, "群机器人发送 " + robot.length + " 条消息");
  }

  function renderPreview(data, plan) {
    var warnings = data.warnings || [];
    $("preview-warnings").hidden = !warnings.length;
    D.fill($("preview-warnings"), warnings.map(function (w) { return h("li", {text: w}); }));
    var next = data.next_due || [];
    $("preview-next").hidden = false;
    D.fill($("preview-next"), next.length ? [h("span", {"class": "muted", text: "接下来发送："}),
                                             next.map(function (t) { return h("span", {"class": "next-time", text: S.fmt(t)}); })]
                                          : h("span", {"class": "muted", text: plan.active ? "按当前规则没有即将到来的发送时间" :
                                                                                            "计划未启用，不会发送"}));
    var groups = data.groups || [];
    if (!groups.length) {
      D.fill($("preview-groups"), h("p", {"class": "empty", text: plan.targets.group_tag ?
        "现在没有带标签「" + plan.targets.group_tag + "」的群" : "没有找到所选的群"}));
      return;
    }
    var total = data.targets_count || groups.length;
    D.fill($("preview-groups"), [total > groups.length ? h("p", {"class": "muted small preview-more",
                                                                 text: "共 " + total + " 个群，下面预览前 " + groups.length + " 个"}) : null]
      .concat(groups.map(function (g) { return groupView(g, plan); })));
  }

  // one group's post as the group sees it: texts as chat bubbles, cards as small cards, problems in red
  function groupView(g, plan) {
    var problems = g.problems || [];
    var notes = g.mode_warnings || [];
    function said(body) {
      return h("div", {"class": "preview-msg"}, h("span", {"class": "avatar pg-avatar", "aria-hidden": "true", text: "店"}), body);
    }
    return h("div", {"class": "preview-group" + (problems.length ? " has-problems" : ""), dataset: {chatId: g.chat_id}},
      h("div", {"class": "pg-head"},
        h("strong", {"class": "pg-name", text: g.name || g.chat_id}),
        (g.tags || []).map(function (t) { return D.tag(t, "plain"); }),
        g.variant ? D.tag("「" + g.variant + "」文案", "warning") : null),
      h("div", {"class": "pg-chat"},
        (g.texts || []).map(function (text) { return said(h("div", {"class": "preview-bubble", text: text})); }),
        (g.cards || []).map(function (card) { return said(cardView(card)); })),
      problems.length ? h("ul", {"class": "preview-problems"},
                          problems.map(function (p) { return h("li", {"class": "preview-problem", text: p}); })) : null,
      notes.length ? h("ul", {"class": "preview-notes"}, notes.map(function (n) { return h("li", {text: n}); })) : null,
      deliveryNote(g, plan.delivery));
  }

  // ---- wiring ----------------------------------------------------------------------------------
  function init() {
    $("new-plan").addEventListener("click", function () { openEditor(null); });
    $("plan-close").addEventListener("click", function () { closeEditor(); });
    $("plan-cancel").addEventListener("click", function () { closeEditor(); });
    $("plan-save").addEventListener("click", save);
    $("preview-refresh").addEventListener("click", preview);
    $("plan-form").addEventListener("submit", function (event) { event.preventDefault(); });
    $("plan-form").addEventListener("input", function (event) {
      if (event.target.id === "groups-q") { filterGroups(); return; }
      changed();
    });
    $("plan-form").addEventListener("change", function (event) {
      var t = event.target;
      if (t.id === "groups-q") { return; }
      if (t.id === "schedule-kind") { showScheduleFields(); }
      if (t.name === "target-mode") { showTargetMode(); }
      if (t.classList.contains("group-check") || t.name === "delivery") { countPicked(); }
      changed();
    });
    $("groups-all").addEventListener("click", function () {
      document.querySelectorAll("#target-groups .group-item:not([hidden]) input.group-check").forEach(function (el) { el.checked = true; });
      countPicked();
      changed();
    });
    $("groups-none").addEventListener("click", function () {
      document.querySelectorAll("#target-groups input.group-check").forEach(function (el) { el.checked = false; });
      countPicked();
      changed();
    });
    $("add-variant").addEventListener("click", function () {
      state.variants.push({group_tag: "", content: [blankBlock("text")]});
      renderVariants();
      changed();
    });
    ["plans-q", "plans-status", "plans-delivery"].forEach(function (id) {
      $(id).addEventListener(id === "plans-q" ? "input" : "change", renderPlans);
    });
    $("failures-toggle").addEventListener("click", function () {
      var open = $("failures-list").hidden;
      $("failures-list").hidden = !open;
      this.textContent = open ? "收起" : "查看";
      this.setAttribute("aria-expanded", open ? "true" : "false");
    });

    S.loadGroups().then(function (g) { state.groups = g; renderPlans(); }).catch(function () { /* names fall back to ids */ });
    loadPlans().then(function () {
      loadFailures();
      var edit = /^#edit=(\d+)$/.exec(window.location.hash);
      if (edit) { openEditor(Number(edit[1])); }
    });
    S.poll(function () {
      if (!$("plan-drawer").hidden) { return null; }  // keep the list still while editing
      return Promise.all([loadPlans(), loadFailures()]);
    }, 10000);
  }

  init();
}());
