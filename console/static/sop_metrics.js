/* 社群数据：最近 N 天（GET /api/sop/metrics?days=N）每天的发送、失败、打卡、活跃成员、违规命中，
 * 画成按天的柱状图（CSS 柱子，不用图表库）和表格；另有今天各群的数字。每分钟刷新一次。 */
(function () {
  "use strict";

  var D = window.SiyuDesk;
  var S = window.SiyuSop;
  var $ = D.$, h = D.h, api = D.api;
  var SERIES = {
    sends: {name: "发送", parts: [["sent", "已发送", "ok"], ["failed", "失败", "bad"]]},
    checkins: {name: "打卡", parts: [["checkins", "打卡", "main"]]},
    members_active: {name: "活跃成员", parts: [["members_active", "活跃成员", "main"]]},
    moderation_hits: {name: "违规命中", parts: [["moderation_hits", "违规命中", "warn"]]}
  };

  var state = {days: 7, series: "sends", data: null, seq: 0};

  function load() {
    var seq = ++state.seq;
    return api("GET", "/api/sop/metrics?days=" + state.days).then(function (result) {
      if (seq !== state.seq) { return; }
      $("metrics-error").hidden = true;
      state.data = result.data;
      $("metrics-updated").textContent = "更新于 " + S.fmt(new Date(), true).replace(/^今天 /, "");
      render();
    }).catch(function (error) {
      if (seq !== state.seq) { return; }
      $("metrics-error").textContent = "数据加载失败：" + error.message;
      $("metrics-error").hidden = false;
    });
  }

  function sum(rows, key) { return rows.reduce(function (n, r) { return n + (Number(r[key]) || 0); }, 0); }

  function card(name, value, sub, kind) {
    var el = document.querySelector(".stat-card[data-stat=" + name + "]");
    el.querySelector(".stat-value").textContent = value;
    el.querySelector(".stat-sub").textContent = sub || "";
    el.classList.toggle("stat-danger", kind === "danger");
  }

  function renderCards(days) {
    var last = days.length ? days[days.length - 1] : {};
    var span = "最近 " + days.length + " 天";
    var sent = sum(days, "sent"), failed = sum(days, "failed");
    card("sent", sent, span + " · 今天 " + (last.sent || 0));
    card("failed", failed, failed ? "失败率 " + D.percent(failed / Math.max(1, sent + failed)) : "没有失败", failed ? "danger" : "");
    card("checkins", sum(days, "checkins"), span + " · 今天 " + (last.checkins || 0));
    card("members_active", last.members_active || 0, "今天发言的成员 · 日均 " +
         (days.length ? Math.round(sum(days, "members_active") / days.length) : 0));
    card("moderation_hits", sum(days, "moderation_hits"), span + " · 今天 " + (last.moderation_hits || 0));
  }

  function renderChart(days) {
    var series = SERIES[state.series];
    var totals = days.map(function (d) { return series.parts.reduce(function (n, p) { return n + (Number(d[p[0]]) || 0); }, 0); });
    var max = Math.max.apply(null, [0].concat(totals));
    if (!days.length) { D.fill($("chart"), h("p", {"class": "empty", text: "没有数据"})); return; }
    var today = S.today();
    D.fill($("chart"), days.map(function (d, i) {
      var stack = h("div", {"class": "vbar-stack"});
      series.parts.forEach(function (p) {
        var value = Number(d[p[0]]) || 0;
        if (!value) { return; }
        var seg = h("span", {"class": "vbar vbar-" + p[2], title: p[1] + " " + value, dataset: {key: p[0]}});
        seg.style.height = (max ? value / max * 100 : 0) + "%";  // CSSOM: allowed by the page's CSP
        stack.append(seg);
      });
      return h("div", {"class": "vcol" + (d.day === today ? " today" : ""), dataset: {day: d.day},
                       title: d.day + " " + series.parts.map(function (p) { return p[1] + " " + (d[p[0]] || 0); }).join("，")},
        h("span", {"class": "vvalue", text: totals[i]}),
        h("div", {"class": "vtrack"}, stack),
        h("span", {"class": "vlabel", text: d.day.slice(5)}),
        h("span", {"class": "vweek muted", text: S.weekday(d.day)}));
    }));
    D.fill($("chart-legend"), series.parts.map(function (p) {
      return h("span", {"class": "legend"}, h("i", {"class": "vbar-" + p[2]}), p[1]);
    }));
  }

  function num(value, bad) {
    value = Number(value) || 0;
    return h("td", {"class": "num" + (bad && value ? " bad" : ""), text: value});
  }

  function render() {
    var data = state.data || {};
    var days = (data.days || []).slice().sort(function (a, b) { return a.day < b.day ? -1 : a.day > b.day ? 1 : 0; });
    renderCards(days);
    renderChart(days);
    var dayRows = days.slice().reverse().map(function (d) {
      return h("tr", {"class": "day-row", dataset: {day: d.day}},
        h("td", {"class": "nowrap", text: d.day + " " + S.weekday(d.day)}),
        num(d.sent), num(d.failed, true), num(d.pending), num(d.skipped), num(d.checkins), num(d.members_active),
        num(d.moderation_hits, true));
    });
    D.fill($("days-body"), dayRows.length ? dayRows : S.emptyRow(8, "没有数据"));
    var groups = (data.groups || []).slice().sort(function (a, b) { return (b.sent + b.failed) - (a.sent + a.failed); });
    D.fill($("groups-body"), groups.length ? groups.map(function (g) {
      return h("tr", {"class": "group-row", dataset: {chatId: g.chat_id}},
        h("td", {title: g.chat_id, text: g.name || g.chat_id}),
        num(g.sent), num(g.failed, true), num(g.checkins), num(g.members_active), num(g.moderation_hits, true));
    }) : S.emptyRow(6, "今天还没有群数据"));
  }

  function init() {
    $("metrics-days").addEventListener("change", function () { state.days = Number(this.value) || 7; load(); });
    document.querySelectorAll(".series-btn").forEach(function (el) {
      el.addEventListener("click", function () {
        state.series = el.dataset.series;
        document.querySelectorAll(".series-btn").forEach(function (b) { b.classList.toggle("active", b === el); });
        $("chart-title").textContent = "按天 · " + SERIES[state.series].name;
        if (state.data) { renderChart((state.data.days || []).slice().sort(function (a, b) { return a.day < b.day ? -1 : 1; })); }
      });
    });
    load();
    S.poll(load, 60000);
  }

  init();
}());
