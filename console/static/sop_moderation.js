/* 违规消息：群消息巡检标出的疑似广告、二维码推广、代购电话、刷屏、强烈负面消息
 * （GET /api/sop/moderation?status=open|handled|false_alarm），标记已处理或误报
 * （POST /api/sop/moderation/{id}）。机器人不能移出成员：页面只说明群主需在企业微信中处理。每 10 秒刷新。 */
(function () {
  "use strict";

  var D = window.SiyuDesk;
  var S = window.SiyuSop;
  var $ = D.$, h = D.h, api = D.api, toast = D.toast;
  var STATUS_TEXT = {open: "待处理", handled: "已处理", false_alarm: "误报"};
  var KIND_COLOR = {ad: "danger", qr_promo: "danger", daigou_phone: "danger", spam_repeat: "warning", negative: "warning"};

  var state = {status: "open", hits: [], counts: {}, seq: 0};

  function load() {
    var seq = ++state.seq;
    var status = state.status;
    return api("GET", "/api/sop/moderation?status=" + encodeURIComponent(status)).then(function (result) {
      if (seq !== state.seq) { return; }
      state.hits = result.data.hits || [];
      state.counts = result.data.counts || {};
      $("hits-updated").textContent = "更新于 " + S.fmt(new Date(), true).replace(/^今天 /, "");
      render();
    }).catch(function (error) {
      if (seq !== state.seq) { return; }
      D.fill($("hits-body"), S.emptyRow(7, "加载失败：" + error.message));
    });
  }

  function mark(hit, status, button) {
    button.disabled = true;
    api("POST", "/api/sop/moderation/" + hit.id, {status: status}).then(function () {
      toast(status === "handled" ? "已标记为已处理" : "已标记为误报", "success");
      return load();
    }).catch(function (error) { button.disabled = false; D.failed(error); });
  }

  function actions(hit) {
    if (hit.status !== "open") {
      return h("span", {"class": "muted small", text: STATUS_TEXT[hit.status] + (hit.handled_by ? " · " + hit.handled_by : "")});
    }
    var done = h("button", {type: "button", "class": "btn btn-xs hit-handled", text: "已处理",
                            title: "群主已在企业微信中处理（提醒、撤回或移出成员）"});
    var wrong = h("button", {type: "button", "class": "btn btn-xs hit-false", text: "误报", title: "这条消息没有问题"});
    done.addEventListener("click", function () { mark(hit, "handled", done); });
    wrong.addEventListener("click", function () { mark(hit, "false_alarm", wrong); });
    return [done, wrong];
  }

  function hitRow(hit) {
    return h("tr", {"class": "hit-row", dataset: {id: hit.id, kind: hit.kind, status: hit.status}},
      h("td", {"class": "col-time", title: hit.at, text: S.fmt(hit.at)}),
      h("td", {"class": "hit-group", title: hit.chat_id, text: hit.group_name || hit.chat_id}),
      h("td", {"class": "hit-member", title: hit.member, text: hit.member_name || hit.member}),
      h("td", {"class": "hit-text"}, h("div", {"class": "said", text: hit.text}),
        hit.reason ? h("div", {"class": "muted small", text: hit.reason}) : null),
      h("td", {}, D.tag(S.hitKindLabel(hit.kind), KIND_COLOR[hit.kind] || "warning")),
      h("td", {}, hit.owner_alerted ? D.tag("已提醒群主", "success") : h("span", {"class": "muted small", text: "未提醒"})),
      h("td", {"class": "col-actions"}, actions(hit)));
  }

  function render() {
    document.querySelectorAll("[data-count]").forEach(function (el) {
      el.textContent = state.counts[el.dataset.count] || 0;
    });
    var kind = $("hits-kind").value;
    var q = $("hits-q").value.trim().toLowerCase();
    var shown = state.hits.filter(function (hit) {
      if (kind && hit.kind !== kind) { return false; }
      return !q || [hit.group_name, hit.chat_id, hit.member_name, hit.member, hit.text].some(function (v) {
        return v && String(v).toLowerCase().indexOf(q) >= 0;
      });
    });
    var rows = shown.map(hitRow);
    if (!rows.length) {
      rows = [S.emptyRow(7, state.hits.length ? "没有符合筛选条件的消息" :
        (state.status === "open" ? "没有待处理的违规消息" : "没有" + STATUS_TEXT[state.status] + "的消息"))];
    }
    D.fill($("hits-body"), rows);
  }

  function setStatus(status) {
    state.status = status;
    document.querySelectorAll(".hit-tabs .tab").forEach(function (el) {
      var on = el.dataset.status === status;
      el.classList.toggle("active", on);
      el.setAttribute("aria-selected", on ? "true" : "false");
    });
    D.fill($("hits-body"), S.emptyRow(7, "加载中…"));
    load();
  }

  function init() {
    document.querySelectorAll(".hit-tabs .tab").forEach(function (el) {
      el.addEventListener("click", function () { setStatus(el.dataset.status); });
    });
    $("hits-kind").addEventListener("change", render);
    $("hits-q").addEventListener("input", render);
    load();
    S.poll(load, 10000);
  }

  init();
}());
