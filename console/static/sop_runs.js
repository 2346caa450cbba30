/* 执行记录页：一个计划在各群的每次发送（GET /api/sop/plans/{id}/runs，最新在前），每 3 秒刷新，
 * 新的发送不用刷新页面就会出现；失败的可以重试（POST /api/sop/runs/{id}/retry）。页头显示计划本身
 * （GET /api/sop/plans/{id}）并可暂停 / 启用。 */
(function () {
  "use strict";

  var D = window.SiyuDesk;
  var S = window.SiyuSop;
  var CFG = D.CFG;
  var $ = D.$, h = D.h, api = D.api, toast = D.toast;
  var PLAN = CFG.plan_id;
  var POLL_MS = 3000;

  var state = {plan: null, runs: [], groups: {}, seq: 0, loaded: false, gone: false};

  function groupName(run) {
    return run.group_name || (state.groups[run.chat_id] && state.groups[run.chat_id].name) || run.chat_id;
  }

  // ---- the plan ----------------------------------------------------------------------------------
  function loadPlan() {
    return api("GET", "/api/sop/plans/" + PLAN).then(function (result) {
      state.plan = result.data;
      renderPlan();
    }).catch(function (error) {
      if (error.status === 404) {
        state.gone = true;
        $("plan-title").textContent = "计划 #" + PLAN + "（不存在或已删除）";
        $("plan-toggle").hidden = true;
        $("plan-edit").hidden = true;
      }
    });
  }

  function renderPlan() {
    var plan = state.plan;
    document.title = plan.name + " · 执行记录 · 思语客服台";
    $("plan-title").textContent = plan.name;
    D.fill($("plan-tags"), [plan.active ? D.tag("启用", "success") : D.tag("已暂停", "info"), S.deliveryTag(plan.delivery)]);
    $("plan-toggle").hidden = false;
    $("plan-toggle").textContent = plan.active ? "暂停" : "启用";
    $("fact-targets").textContent = S.targetText(plan.targets, state.groups, plan.targets_count);
    $("fact-schedule").textContent = plan.schedule_text || "";
    $("fact-delivery").textContent = S.deliveryLabel(plan.delivery);
    $("fact-next").textContent = plan.next_due ? S.fmt(plan.next_due) : (plan.active ? "没有即将到来的发送" : "已暂停");
  }

  function toggle() {
    var plan = state.plan;
    if (!plan) { return; }
    $("plan-toggle").disabled = true;
    api("POST", "/api/sop/plans/" + PLAN + "/active", {active: !plan.active}).then(function (result) {
      state.plan = Object.assign({}, plan, result.data);
      renderPlan();
      toast(state.plan.active ? "已启用" : "已暂停", "success");
    }).catch(D.failed).then(function () { $("plan-toggle").disabled = false; });
  }

  // ---- the runs ----------------------------------------------------------------------------------
  function loadRuns() {
    var seq = ++state.seq;
    return api("GET", "/api/sop/plans/" + PLAN + "/runs").then(function (result) {
      if (seq !== state.seq) { return; }
      state.runs = result.data.runs || [];
      state.loaded = true;
      $("runs-error").hidden = true;
      $("runs-updated").textContent = "更新于 " + S.fmt(new Date(), true).replace(/^今天 /, "");
      render();
    }).catch(function (error) {
      if (seq !== state.seq) { return; }
      $("runs-error").textContent = "执行记录加载失败：" + error.message;
      $("runs-error").hidden = false;
    });
  }

  function retry(run, button) {
    button.disabled = true;
    api("POST", "/api/sop/runs/" + run.id + "/retry").then(function () {
      toast("已重新安排发送：" + groupName(run), "success");
      return loadRuns();
    }).catch(function (error) { button.disabled = false; D.failed(error); });
  }

  function runRow(run) {
    var detail = [];
    if (run.reason) { detail.push(h("div", {"class": "run-reason" + (run.status === "failed" ? " failed" : ""), text: run.reason})); }
    if (run.message_id) { detail.push(h("div", {"class": "muted small mono", text: "消息 " + run.message_id})); }
    var actions = null;
    if (run.status === "failed") {
      actions = h("button", {type: "button", "class": "btn btn-xs btn-danger-plain run-retry", text: "重试"});
      actions.addEventListener("click", function () { retry(run, actions); });
    }
    return h("tr", {"class": "run-row", dataset: {id: run.id, status: run.status, chatId: run.chat_id}},
      h("td", {"class": "col-time", title: run.due_at, text: S.fmt(run.due_at)}),
      h("td", {"class": "run-group", title: run.chat_id, text: groupName(run)}),
      h("td", {}, S.deliveryTag(run.delivery)),
      h("td", {}, S.statusTag(run.status)),
      h("td", {"class": "col-time", title: run.sent_at || "", text: run.sent_at ? S.fmt(run.sent_at, true) : "—"}),
      h("td", {"class": "num", text: run.attempts || 0}),
      h("td", {"class": "col-detail"}, detail.length ? detail : h("span", {"class": "muted", text: "—"})),
      h("td", {"class": "col-actions"}, actions));
  }

  function render() {
    var counts = {sent: 0, pending: 0, failed: 0, skipped: 0};
    state.runs.forEach(function (r) { if (counts[r.status] !== undefined) { counts[r.status] += 1; } });
    Object.keys(counts).forEach(function (k) {
      var card = document.querySelector(".stat-card[data-stat=" + k + "]");
      card.querySelector(".stat-value").textContent = counts[k];
      card.classList.toggle("stat-danger", k === "failed" && counts[k] > 0);
    });
    var status = $("runs-status").value;
    var q = $("runs-q").value.trim().toLowerCase();
    var shown = state.runs.filter(function (r) {
      if (status && r.status !== status) { return false; }
      return !q || groupName(r).toLowerCase().indexOf(q) >= 0 || String(r.chat_id).toLowerCase().indexOf(q) >= 0;
    });
    $("runs-count").textContent = state.runs.length;
    var rows = shown.map(runRow);
    if (!rows.length) {
      rows = [S.emptyRow(8, state.runs.length ? "没有符合筛选条件的记录" :
        (state.gone ? "计划不存在或已删除" : "还没有发送记录：到了计划的发送时间后，每个群的发送会出现在这里"))];
    }
    D.fill($("runs-body"), rows);
  }

  function init() {
    $("plan-toggle").addEventListener("click", toggle);
    $("runs-status").addEventListener("change", render);
    $("runs-q").addEventListener("input", render);
    S.loadGroups().then(function (g) {
      state.groups = g.byId;
      if (state.plan) { renderPlan(); }
      if (state.loaded) { render(); }
    }).catch(function () { /* ids stand in for names */ });
    loadPlan();
    loadRuns();
    S.poll(loadRuns, POLL_MS);
    S.poll(function () { return state.gone ? null : loadPlan(); }, 30000);
  }

  init();
}());
