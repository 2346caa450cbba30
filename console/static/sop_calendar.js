/* 发送日历：一周（周一到周日，店铺时区）内各计划的发送时间（GET /api/sop/calendar?start=YYYY-MM-DD&days=7），
 * 画成 7 列的周视图；已发生的时间点附上各群的发送结果。?start= 记在地址栏里；每分钟刷新一次。 */
(function () {
  "use strict";

  var D = window.SiyuDesk;
  var S = window.SiyuSop;
  var $ = D.$, h = D.h, api = D.api;
  var DAYS = 7;

  var state = {start: "", entries: [], seq: 0};

  function startFromUrl() {
    var start = new URLSearchParams(window.location.search).get("start") || "";
    return /^\d{4}-\d{2}-\d{2}$/.test(start) ? S.monday(start) : S.monday(S.today());
  }

  function setStart(start) {
    state.start = S.monday(start);
    var thisWeek = state.start === S.monday(S.today());
    history.replaceState(null, "", window.location.pathname + (thisWeek ? "" : "?start=" + state.start));
    load();
  }

  function load() {
    var seq = ++state.seq;
    var start = state.start;
    renderFrame();
    return api("GET", "/api/sop/calendar?start=" + encodeURIComponent(start) + "&days=" + DAYS).then(function (result) {
      if (seq !== state.seq) { return; }
      $("cal-error").hidden = true;
      state.entries = result.data.entries || [];
      render();
    }).catch(function (error) {
      if (seq !== state.seq) { return; }
      $("cal-error").textContent = "日历加载失败：" + error.message;
      $("cal-error").hidden = false;
    });
  }

  function days() {
    var out = [];
    for (var i = 0; i < DAYS; i++) { out.push(S.addDays(state.start, i)); }
    return out;
  }

  function renderFrame() {
    var list = days();
    $("cal-range").textContent = list[0] + " 至 " + list[DAYS - 1];
    $("cal-today").disabled = state.start === S.monday(S.today());
  }

  function entryView(entry, p) {
    var runs = entry.runs || {};
    var done = (runs.sent || 0) + (runs.failed || 0) + (runs.pending || 0) + (runs.skipped || 0);
    var classes = "cal-entry" + (entry.active ? "" : " paused") + (runs.failed ? " has-failed" : "") +
                  (done ? " has-runs" : "");
    return h("a", {"class": classes, href: "/sop/plans/" + entry.plan_id,
                   title: entry.plan_name + " · " + (entry.schedule_text || "") + " · " + S.deliveryLabel(entry.delivery) +
                          (entry.active ? "" : "（已暂停）"),
                   dataset: {planId: entry.plan_id, due: entry.due_at}},
      h("span", {"class": "cal-time", text: p.time}),
      h("span", {"class": "cal-name", text: entry.plan_name}),
      h("span", {"class": "cal-meta"},
        S.deliveryTag(entry.delivery),
        entry.active ? null : D.tag("已暂停", "info"),
        done ? S.runCounts(runs) : null));
  }

  function render() {
    var showPaused = $("cal-paused").checked;
    var byDay = {};
    state.entries.forEach(function (entry) {
      if (!entry.active && !showPaused) { return; }
      var p = S.parts(entry.due_at);
      if (!p) { return; }
      (byDay[p.date] = byDay[p.date] || []).push({entry: entry, p: p});
    });
    var today = S.today();
    D.fill($("calendar"), days().map(function (day) {
      var items = (byDay[day] || []).sort(function (a, b) {
        return a.p.time < b.p.time ? -1 : a.p.time > b.p.time ? 1 : String(a.entry.plan_name).localeCompare(b.entry.plan_name);
      });
      return h("section", {"class": "cal-day" + (day === today ? " today" : "") + (day < today ? " past" : ""),
                           dataset: {day: day}, "aria-label": day + " " + S.weekday(day)},
        h("header", {"class": "cal-day-head"},
          h("span", {"class": "cal-weekday", text: S.weekday(day)}),
          h("span", {"class": "cal-date", text: day.slice(5)}),
          day === today ? D.tag("今天", "primary") : null,
          items.length ? h("span", {"class": "count", text: items.length}) : null),
        h("div", {"class": "cal-day-body"},
          items.length ? items.map(function (it) { return entryView(it.entry, it.p); })
                       : h("p", {"class": "cal-empty", text: "无安排"})));
    }));
  }

  function init() {
    state.start = startFromUrl();
    $("cal-prev").addEventListener("click", function () { setStart(S.addDays(state.start, -7)); });
    $("cal-next").addEventListener("click", function () { setStart(S.addDays(state.start, 7)); });
    $("cal-today").addEventListener("click", function () { setStart(S.today()); });
    $("cal-day").addEventListener("change", function () {
      if (this.value) { setStart(this.value); this.value = ""; }
    });
    $("cal-paused").addEventListener("change", render);
    load();
    S.poll(load, 60000);
  }

  init();
}());
