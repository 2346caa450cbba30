/* 社群 SOP 各页面共用（在 common.js 之后加载）：发送方式、执行状态、违规类型的中文名与颜色，
 * 店铺时区的时间显示，目标群的描述，调度器状态（GET /api/sop/scheduler）和定时刷新。
 * 各页面脚本（sop_plans.js、sop_runs.js、sop_calendar.js、sop_moderation.js、sop_keywords.js、
 * sop_metrics.js）通过 window.SiyuSop 使用。 */
(function () {
  "use strict";

  var D = window.SiyuDesk;
  var CFG = D.CFG;
  var h = D.h;
  var TZ = CFG.tz || "Asia/Shanghai";

  var DELIVERY = {robot: "群机器人", mass_send: "企业微信群发", owner_reminder: "提醒群主转发"};
  var DELIVERY_KIND = {robot: "primary", mass_send: "warning", owner_reminder: "plain"};
  var STATUS = {pending: ["待发送", "primary"], sent: ["已发送", "success"], failed: ["失败", "danger"],
                skipped: ["已跳过", "info"]};
  var HIT_KINDS = {ad: "广告", qr_promo: "二维码推广", daigou_phone: "代购电话", spam_repeat: "刷屏", negative: "强烈负面"};
  var WEEKDAYS = ["周日", "周一", "周二", "周三", "周四", "周五", "周六"];  // Date.getUTCDay() order

  // ---- times in the shop's time zone ----------------------------------------------------------
  var FORMAT = null;
  try {
    FORMAT = new Intl.DateTimeFormat("en-GB", {timeZone: TZ, year: "numeric", month: "2-digit", day: "2-digit",
                                               hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23"});
  } catch (e) { FORMAT = null; }

  // an ISO time (or a Date) -> {date: "YYYY-MM-DD", time: "HH:MM", seconds: "SS"} in the shop's zone
  function parts(value) {
    if (!value) { return null; }
    var d = value instanceof Date ? value : new Date(value);
    if (isNaN(d)) { return null; }
    if (!FORMAT) {
      return {date: d.getFullYear() + "-" + D.pad(d.getMonth() + 1) + "-" + D.pad(d.getDate()),
              time: D.pad(d.getHours()) + ":" + D.pad(d.getMinutes()), seconds: D.pad(d.getSeconds())};
    }
    var out = {};
    FORMAT.formatToParts(d).forEach(function (p) { out[p.type] = p.value; });
    var hour = out.hour === "24" ? "00" : out.hour;
    return {date: out.year + "-" + out.month + "-" + out.day, time: hour + ":" + out.minute, seconds: out.second};
  }

  function today() { return CFG.today || (parts(new Date()) || {}).date || ""; }

  // "YYYY-MM-DD" plus n days
  function addDays(day, n) {
    var d = new Date(day + "T12:00:00Z");
    d.setUTCDate(d.getUTCDate() + n);
    return d.toISOString().slice(0, 10);
  }

  function weekday(day) { return WEEKDAYS[new Date(day + "T12:00:00Z").getUTCDay()]; }

  // the Monday of the week of a day
  function monday(day) {
    var n = new Date(day + "T12:00:00Z").getUTCDay();
    return addDays(day, n === 0 ? -6 : 1 - n);
  }

  // "今天 10:00" / "明天 10:00" / "12-07 10:00" / "2027-01-02 10:00"; seconds: with :SS
  function fmt(value, seconds) {
    var p = parts(value);
    if (!p) { return ""; }
    var now = today();
    var time = p.time + (seconds ? ":" + p.seconds : "");
    if (p.date === now) { return "今天 " + time; }
    if (p.date === addDays(now, 1)) { return "明天 " + time; }
    if (p.date === addDays(now, -1)) { return "昨天 " + time; }
    return (p.date.slice(0, 4) === now.slice(0, 4) ? p.date.slice(5) : p.date) + " " + time;
  }

  // a date-time typed in the shop's zone ("YYYY-MM-DDTHH:MM") -> ISO with the shop's offset
  function localToIso(value) {
    if (!value) { return ""; }
    var base = value.length === 16 ? value + ":00" : value.slice(0, 19);
    return base + (CFG.utc_offset || "+08:00");
  }

  // an ISO time -> "YYYY-MM-DDTHH:MM" in the shop's zone (for a datetime-local input)
  function isoToLocal(value) {
    var p = parts(value);
    return p ? p.date + "T" + p.time : "";
  }

  // ---- labels ---------------------------------------------------------------------------------
  function deliveryLabel(mode) { return DELIVERY[mode] || mode || ""; }

  function deliveryTag(mode) { return D.tag(deliveryLabel(mode), DELIVERY_KIND[mode] || "plain"); }

  function statusTag(status) {
    var s = STATUS[status] || [status || "未知", "info"];
    var el = D.tag(s[0], s[1]);
    el.classList.add("status-tag");
    el.dataset.status = status || "";
    return el;
  }

  function hitKindLabel(kind) { return HIT_KINDS[kind] || kind || ""; }

  // {chat_ids: [...]} / {group_tag} -> words; groups: chat_id -> group (from /api/sop/groups)
  function targetText(targets, groups, count) {
    targets = targets || {};
    if (targets.group_tag) {
      return "标签「" + targets.group_tag + "」" + (count !== undefined && count !== null ? "（" + count + " 个群）" : "");
    }
    if (targets.owner) { return "群主 " + targets.owner + " 的群" + (count !== undefined && count !== null ? "（" + count + " 个）" : ""); }
    var ids = targets.chat_ids || [];
    var names = ids.slice(0, 2).map(function (id) { return (groups && groups[id] && groups[id].name) || id; });
    return names.join("、") + (ids.length > 2 ? " 等 " + ids.length + " 个群" : "");
  }

  // the run counts {sent, failed, pending, skipped} as small words; failures in red
  function runCounts(runs) {
    runs = runs || {};
    var out = [];
    out.push(h("span", {"class": "rc rc-sent", title: "已发送", text: "已发送 " + (runs.sent || 0)}));
    out.push(h("span", {"class": "rc rc-failed" + (runs.failed ? " hot" : ""), title: "失败",
                        text: "失败 " + (runs.failed || 0)}));
    if (runs.pending) { out.push(h("span", {"class": "rc rc-pending", text: "待发送 " + runs.pending})); }
    if (runs.skipped) { out.push(h("span", {"class": "rc rc-skipped", text: "已跳过 " + runs.skipped})); }
    return h("span", {"class": "run-counts"}, out);
  }

  function emptyRow(colspan, text) {
    return h("tr", {"class": "empty-row"}, h("td", {colspan: String(colspan), "class": "empty", text: text}));
  }

  // ---- the groups (cached per page) -----------------------------------------------------------
  var groupsPromise = null;

  function loadGroups(fresh) {
    if (!groupsPromise || fresh) {
      groupsPromise = D.api("GET", "/api/sop/groups").then(function (result) {
        var byId = {};
        (result.data.groups || []).forEach(function (g) { byId[g.chat_id] = g; });
        return {groups: result.data.groups || [], tags: result.data.tags || [], byId: byId};
      });
      groupsPromise.catch(function () { groupsPromise = null; });
    }
    return groupsPromise;
  }

  // ---- polling: fn every ms while the tab is visible (and at once when it becomes visible) -----
  function poll(fn, ms) {
    var timer = null;
    var running = false;

    function tick() {
      timer = null;
      if (document.hidden) { return; }
      if (running) { schedule(); return; }
      running = true;
      Promise.resolve().then(fn).catch(function () { /* the page shows its own error */ }).then(function () {
        running = false;
        schedule();
      });
    }

    function schedule() { if (!timer) { timer = setTimeout(tick, ms); } }

    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) { if (timer) { clearTimeout(timer); timer = null; } tick(); }
    });
    schedule();
    return {now: function () { if (timer) { clearTimeout(timer); timer = null; } tick(); }};
  }

  // ---- the scheduler's heartbeat --------------------------------------------------------------
  function showScheduler(data) {
    var el = document.getElementById("scheduler-status");
    if (!el) { return; }
    var alive = !!(data && data.alive);
    el.classList.toggle("ok", alive);
    el.classList.toggle("down", !alive);
    el.dataset.alive = alive ? "true" : "false";
    el.querySelector("span").textContent = alive ? "调度器运行中" : "调度器未运行";
    el.title = alive ? "SOP 调度器运行中" + (data.leader ? "（" + data.leader + "）" : "") +
                       (data.seen_at ? "，最近心跳 " + fmt(data.seen_at, true) : "")
                     : "SOP 调度器未运行：计划不会按时发送，请检查 community_sop.scheduler 进程" +
                       (data && data.seen_at ? "（最近心跳 " + fmt(data.seen_at, true) + "）" : "");
  }

  function watchScheduler() {
    if (!document.getElementById("scheduler-status")) { return; }
    function load() {
      return D.api("GET", "/api/sop/scheduler").then(function (result) { showScheduler(result.data); },
                                                        function () { showScheduler(null); });
    }
    load();
    poll(load, 15000);
  }

  // ---- the top bar: moderators have no conversations, so no live desk feed --------------------
  function topbar() {
    if (CFG.can_work) {
      D.live({});  // supervisors still hear about new handoffs on these pages
    } else {
      var live = document.getElementById("live-status");
      if (live) { live.hidden = true; }
    }
  }

  window.SiyuSop = {
    DELIVERY: DELIVERY, STATUS: STATUS, HIT_KINDS: HIT_KINDS, parts: parts, today: today, addDays: addDays,
    weekday: weekday, monday: monday, fmt: fmt, localToIso: localToIso, isoToLocal: isoToLocal,
    deliveryLabel: deliveryLabel, deliveryTag: deliveryTag, statusTag: statusTag, hitKindLabel: hitKindLabel,
    targetText: targetText, runCounts: runCounts, emptyRow: emptyRow, loadGroups: loadGroups, poll: poll
  };
  topbar();
  watchScheduler();
}());
