/* 一对一触达各页面（在 common.js 之后加载，按页面的 data-view 分别初始化）：
 *   规则      GET /api/nudges/rules + /api/nudges/report?days=30：列表、启用 / 暂停（POST …/status）、
 *             审批（POST …/approve）、删除（DELETE）、导出（GET /api/nudges/rules/export）、导入（POST …/import）；
 *   规则编辑  GET /api/nudges/rules/{id}，保存 POST /api/nudges/rules 或 PUT /api/nudges/rules/{id}；
 *             表单与右侧的完整 JSON 双向同步，表单没有的字段按 JSON 保存；
 *   效果      GET /api/nudges/report?days=30|90：每条规则的发送、对照组、拦截与退出原因、回复、转化与提升；
 *   客户触达记录 GET /api/nudges/customers/{编号}：授权（POST …/consent）、分层与健康度、触达记录；
 *   事件      GET /api/nudges/events + /api/nudges/segments，演示模式下 POST /api/nudges/demo/play。
 * 中文名称（原因、退出条件、事件类型等）由页面配置 CFG.nudges 提供（console/nudges_pages.py）。 */
(function () {
  "use strict";

  var D = window.SiyuDesk;
  var CFG = D.CFG;
  var L = CFG.nudges || {};
  var $ = D.$, h = D.h, api = D.api, toast = D.toast;
  var TZ = CFG.tz || "Asia/Shanghai";
  var FLASH = "siyu-nudges-flash";

  // ---- times in the shop's time zone ------------------------------------------------------------
  var FORMAT = null;
  try {
    FORMAT = new Intl.DateTimeFormat("en-GB", {timeZone: TZ, year: "numeric", month: "2-digit", day: "2-digit",
                                               hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23"});
  } catch (e) { FORMAT = null; }

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
    return {date: out.year + "-" + out.month + "-" + out.day, time: (out.hour === "24" ? "00" : out.hour) + ":" + out.minute,
            seconds: out.second};
  }

  // "今天 10:00" / "昨天 10:00" / "12-07 10:00" / "2025-12-07 10:00"
  function fmt(value, seconds) {
    var p = parts(value);
    if (!p) { return ""; }
    var today = CFG.today || (parts(new Date()) || {}).date || "";
    var time = p.time + (seconds ? ":" + p.seconds : "");
    var yesterday = new Date(today + "T12:00:00Z");
    yesterday.setUTCDate(yesterday.getUTCDate() - 1);
    if (p.date === today) { return "今天 " + time; }
    if (p.date === yesterday.toISOString().slice(0, 10)) { return "昨天 " + time; }
    return (p.date.slice(0, 4) === today.slice(0, 4) ? p.date.slice(5) : p.date) + " " + time;
  }

  function now() { return fmt(new Date(), true).replace(/^今天 /, ""); }

  // ---- words ------------------------------------------------------------------------------------
  var RULE_STATUS_KIND = {live: "success", paused: "info", pending: "warning"};
  var LOG_STATUS_KIND = {scheduled: "primary", sent: "success", suppressed: "warning", holdout: "info", exited: "plain"};
  var EVENT_STATUS_KIND = {"new": "primary", done: "success", ignored: "info", failed: "danger"};

  function labelOf(map, key) { return (map && map[key]) || key || ""; }

  function reasonText(reason) { return reason ? labelOf(L.reasons, reason) : ""; }

  function ruleStatusTag(status) {
    var el = D.tag(labelOf(L.rule_status, status), RULE_STATUS_KIND[status] || "info");
    el.classList.add("rule-status");
    el.dataset.status = status || "";
    return el;
  }

  function logStatusTag(status) {
    var el = D.tag(labelOf(L.log_status, status), LOG_STATUS_KIND[status] || "info");
    el.classList.add("log-status");
    el.dataset.status = status || "";
    return el;
  }

  function triggerText(def) {
    var t = (def && def.trigger) || {};
    if (t.event) { return labelOf(L.event_names, t.event); }
    if (t.daily_at) { return "每天 " + t.daily_at + " · " + labelOf(L.audiences, t.audience).replace(/（.*$/, ""); }
    return "—";
  }

  function delayText(def) {
    var d = (def && def.delay) || {};
    if (d.use_cycle_days_before !== undefined && d.use_cycle_days_before !== null) {
      return "使用周期前 " + d.use_cycle_days_before + " 天";
    }
    var m = Number(d.minutes) || 0;
    if (!m) { return "立即"; }
    if (m < 1) { return Math.round(m * 60) + " 秒后"; }
    if (m >= 1440 && m % 1440 === 0) { return (m / 1440) + " 天后"; }
    if (m >= 60 && m % 60 === 0) { return (m / 60) + " 小时后"; }
    return m + " 分钟后";
  }

  // 0.293 -> "29.3%" (one decimal, always)
  function percent(value) {
    return value === null || value === undefined ? "—" : (Math.round(value * 1000) / 10).toFixed(1) + "%";
  }

  // a difference of two rates in percentage points, signed, one decimal: 0.122 -> "+12.2"
  function points(value) {
    if (value === null || value === undefined) { return "—"; }
    var n = Math.round(value * 1000) / 10;
    return (n > 0 ? "+" : "") + n.toFixed(1);
  }

  function pValue(p) {
    if (p === null || p === undefined) { return "—"; }
    return p < 0.001 ? "p < 0.001" : "p = " + p.toFixed(3);
  }

  function yuan(value) { return "¥" + (Number(value) || 0).toLocaleString("zh-CN", {maximumFractionDigits: 2}); }

  function emptyRow(colspan, text) {
    return h("tr", {"class": "empty-row"}, h("td", {colspan: String(colspan), "class": "empty", text: text}));
  }

  function sum(obj) {
    return Object.keys(obj || {}).reduce(function (n, k) { return n + (Number(obj[k]) || 0); }, 0);
  }

  function flash(text) { try { sessionStorage.setItem(FLASH, text); } catch (e) { /* private mode */ } }

  function showFlash() {
    var text = null;
    try { text = sessionStorage.getItem(FLASH); sessionStorage.removeItem(FLASH); } catch (e) { text = null; }
    if (text) { toast(text, "success"); }
  }

  function showError(id, text) {
    var el = $(id);
    if (!el) { return; }
    el.textContent = text || "";
    el.hidden = !text;
  }

  function clone(value) { return JSON.parse(JSON.stringify(value === undefined ? null : value)); }

  // ================================================================================================
  // 规则
  // ================================================================================================
  var rules = {list: [], report: {}, seq: 0};

  function loadRules() {
    var seq = ++rules.seq;
    var report = api("GET", "/api/nudges/report?days=30").then(function (r) { return r.data.rules || []; },
                                                              function () { return null; });
    return Promise.all([api("GET", "/api/nudges/rules"), report]).then(function (results) {
      if (seq !== rules.seq) { return; }
      rules.list = results[0].data.rules || [];
      rules.report = {};
      (results[1] || []).forEach(function (r) { rules.report[r.rule] = r; });
      rules.reportFailed = results[1] === null;
      showError("rules-error", "");
      renderRules();
    }).catch(function (error) {
      if (seq !== rules.seq) { return; }
      D.fill($("rules-body"), emptyRow(9, "规则加载失败：" + error.message));
    });
  }

  function ruleMatches(rule, q, status) {
    if (status && rule.status !== status) { return false; }
    if (!q) { return true; }
    return [rule.name, rule.key, triggerText(rule.definition)].some(function (w) {
      return w && String(w).toLowerCase().indexOf(q) >= 0;
    });
  }

  function conversionCell(r) {
    if (!r) { return h("td", {"class": "col-conv muted", text: rules.reportFailed ? "效果加载失败" : "—"}); }
    var u = r.uplift || {};
    return h("td", {"class": "col-conv"},
      h("span", {"class": "conv-rates", text: percent(r.treatment.rate) + " / " + percent(r.control.rate)}),
      u.difference !== null && u.difference !== undefined
        ? h("div", {"class": "muted small", text: "提升 " + points(u.difference) + " 个百分点" + (u.enough_data ? (u.significant ? "（显著）" : "（不显著）") : "（样本不足）")})
        : null);
  }

  function ruleRow(rule) {
    var def = rule.definition || {};
    var r = rules.report[rule.key];
    var actions = [];
    if (rule.status === "paused") {
      actions.push(h("button", {type: "button", "class": "btn btn-xs rule-enable", text: "启用",
                                onclick: function () { setStatus(rule, "live", this); }}));
    } else {
      actions.push(h("button", {type: "button", "class": "btn btn-xs rule-pause", text: "暂停",
                                onclick: function () { setStatus(rule, "paused", this); }}));
    }
    if (rule.status === "pending") {
      actions.push(h("button", {type: "button", "class": "btn btn-xs btn-warning rule-approve", text: "审批",
                                onclick: function () { approve(rule, this); }}));
    }
    actions.push(h("a", {"class": "btn btn-xs rule-edit", href: "/nudges/rules/" + rule.id, text: "编辑"}));
    actions.push(h("button", {type: "button", "class": "btn btn-xs btn-danger-plain rule-delete", text: "删除",
                              onclick: function () { removeRule(rule); }}));
    return h("tr", {"class": "rule-row", dataset: {id: rule.id, key: rule.key, status: rule.status, name: rule.name}},
      h("td", {"class": "col-name"},
        h("a", {"class": "rule-name", href: "/nudges/rules/" + rule.id, text: rule.name}),
        rule.requires_approval ? D.tag("需审批", "warning") : null,
        h("div", {"class": "muted small"}, h("span", {"class": "mono", text: rule.key}),
          rule.updated_at ? " · " + (rule.updated_by || "") + " 更新于 " + fmt(rule.updated_at) : "")),
      h("td", {"class": "col-trigger"}, h("span", {text: triggerText(def)}),
        h("div", {"class": "muted small", text: delayText(def) + (def.exits && def.exits.length ? " · 退出：" +
          def.exits.map(function (e) { return labelOf(L.exits, e); }).join("、") : "")})),
      h("td", {}, D.tag(labelOf(L.categories, def.category), def.category === "transactional" ? "primary" : "plain")),
      h("td", {"class": "nowrap", text: labelOf(L.priority_names, def.priority)}),
      h("td", {"class": "col-status"}, ruleStatusTag(rule.status),
        rule.status === "pending" ? h("div", {"class": "muted small", text: "等待主管审批"}) :
          rule.approved_by && rule.status === "live" && rule.requires_approval ?
            h("div", {"class": "muted small", text: rule.approved_by + " 已审批"}) : null),
      h("td", {"class": "num stat-sent", text: r ? r.sent : "—"}),
      h("td", {"class": "num stat-holdout", text: r ? r.holdout : "—"}),
      conversionCell(r),
      h("td", {"class": "col-actions"}, actions));
  }

  function renderRules() {
    var q = $("rules-q").value.trim().toLowerCase();
    var status = $("rules-status").value;
    var shown = rules.list.filter(function (rule) { return ruleMatches(rule, q, status); });
    $("rules-count").textContent = rules.list.length;
    D.fill($("rules-body"), shown.length ? shown.map(ruleRow)
      : emptyRow(9, rules.list.length ? "没有符合筛选条件的规则" : "还没有规则：点击“新建规则”或导入 JSON"));
  }

  function setStatus(rule, status, button) {
    button.disabled = true;
    api("POST", "/api/nudges/rules/" + rule.id + "/status", {status: status}).then(function (result) {
      var now = result.data.status;
      if (status === "live" && now === "pending") {
        toast("「" + rule.name + "」需要审批：已提交，审批通过后生效", "warning");
      } else {
        toast((now === "live" ? "已启用「" : "已暂停「") + rule.name + "」", "success");
      }
      return loadRules();
    }).catch(function (error) { button.disabled = false; D.failed(error); });
  }

  function approve(rule, button) {
    D.confirm("审批规则", "审批通过后「" + rule.name + "」立即生效（运行中），按规则给客户发送消息。", "审批通过").then(function (ok) {
      if (!ok) { return; }
      button.disabled = true;
      api("POST", "/api/nudges/rules/" + rule.id + "/approve").then(function () {
        toast("已审批「" + rule.name + "」，规则运行中", "success");
        return loadRules();
      }).catch(function (error) { button.disabled = false; D.failed(error); });
    });
  }

  function removeRule(rule) {
    D.confirm("删除规则", "删除「" + rule.name + "」？规则立即停止发送；已有的触达记录和效果数据保留。", "删除", true).then(function (ok) {
      if (!ok) { return; }
      api("DELETE", "/api/nudges/rules/" + rule.id).then(function () {
        toast("已删除「" + rule.name + "」", "success");
        return loadRules();
      }).catch(D.failed);
    });
  }

  function importDialog() {
    var file = h("input", {type: "file", id: "import-file", accept: ".json,application/json", "class": "import-file",
                           "aria-label": "选择 JSON 文件"});
    var text = h("textarea", {id: "import-text", "class": "input mono import-text", rows: "12", spellcheck: "false",
                              placeholder: "{\"rules\": [ … ]}（导出的文件内容，或一组规则定义）", "aria-label": "规则 JSON"});
    var result = h("div", {id: "import-result", "class": "form-result", role: "status", hidden: true});
    var submit = h("button", {type: "button", "class": "btn btn-sm btn-primary", id: "import-submit", text: "导入"});
    var cancel = h("button", {type: "button", "class": "btn btn-sm", id: "import-cancel", text: "取消"});
    var d = D.dialog({title: "导入规则 JSON", wide: true, "class": "import-dialog",
                      body: [h("p", {"class": "muted small import-intro",
                                     text: "选择导出的 JSON 文件或粘贴内容。按规则编号：新的规则创建为暂停状态，已有的规则被更新（需要审批的规则更新后重新等待审批）；有一条不合格就全部不导入。"}),
                             h("div", {"class": "import-file-line"}, file), text, result],
                      foot: [cancel, submit]});
    cancel.addEventListener("click", d.close);

    function say(message, ok) {
      result.textContent = message;
      result.className = "form-result " + (ok ? "form-result-success" : "form-result-error");
      result.hidden = false;
    }

    file.addEventListener("change", function () {
      var chosen = file.files && file.files[0];
      if (!chosen) { return; }
      var reader = new FileReader();
      reader.onload = function () { text.value = String(reader.result || ""); result.hidden = true; };
      reader.onerror = function () { say("文件读取失败", false); };
      reader.readAsText(chosen, "utf-8");
    });
    submit.addEventListener("click", function () {
      var body;
      try {
        body = JSON.parse(text.value);
      } catch (e) {
        say(text.value.trim() ? "不是有效的 JSON：" + e.message : "请选择文件或粘贴 JSON", false);
        return;
      }
      submit.disabled = true;
      api("POST", "/api/nudges/rules/import", body).then(function (r) {
        say("导入完成：新建 " + (r.data.created || 0) + " 条，更新 " + (r.data.updated || 0) + " 条。新建的规则为暂停状态。", true);
        cancel.textContent = "关闭";
        loadRules();
      }).catch(function (error) {
        if (error.status !== 401) { say("导入失败：" + error.message, false); }
      }).then(function () { submit.disabled = false; });
    });
  }

  function initRules() {
    $("rules-q").addEventListener("input", renderRules);
    $("rules-status").addEventListener("change", renderRules);
    $("import-rules").addEventListener("click", importDialog);
    showFlash();
    loadRules().then(function () {
      var saved = /^#saved=(.+)$/.exec(window.location.hash);
      if (saved) {
        var row = document.querySelector(".rule-row[data-key='" + decodeURIComponent(saved[1]).replace(/[^a-z0-9_]/g, "") + "']");
        if (row) { row.classList.add("just-saved"); row.scrollIntoView({block: "center"}); }
        history.replaceState(null, "", window.location.pathname);
      }
    });
  }

  // ================================================================================================
  // 规则编辑
  // ================================================================================================
  var editor = {id: null, base: null, rule: null, lastText: null, jsonBad: false, saving: false, dirty: false};
  var PERSONAS = L.personas || [];

  function newDefinition() {
    var text = {};
    PERSONAS.forEach(function (p) { text[p] = ""; });
    return {key: "", name: "", trigger: {event: "checkout_started"}, conditions: {}, delay: {minutes: 30}, exits: [],
            message: {text: text, unsubscribe_hint: true}, category: "marketing", priority: "lifecycle",
            cap: {cooldown_days: 7}, quiet_hours: "hold", requires_approval: false};
  }

  function value(id) { return $(id).value; }

  function setValue(id, v) { $(id).value = v === null || v === undefined ? "" : v; }

  function list(id) {
    return value(id).split(/[,，、\s]+/).map(function (s) { return s.trim(); }).filter(Boolean);
  }

  // a number field: its number, or undefined when empty; `integer`: whole numbers only
  function number(id, integer) {
    var raw = value(id).trim();
    if (raw === "") { return undefined; }
    var n = Number(raw);
    if (isNaN(n)) { return raw; }  // the API names the field and says why
    return integer && Math.floor(n) === n ? Math.floor(n) : n;
  }

  function radio(name) {
    var el = document.querySelector("input[name=" + name + "]:checked");
    return el ? el.value : "";
  }

  function setRadio(name, v) {
    document.querySelectorAll("input[name=" + name + "]").forEach(function (el) { el.checked = el.value === v; });
  }

  function put(obj, key, v) {
    if (v === undefined || v === null || v === "" || (Array.isArray(v) && !v.length)) { delete obj[key]; } else { obj[key] = v; }
  }

  function range(minId, maxId) {
    var out = {};
    put(out, "min", number(minId));
    put(out, "max", number(maxId));
    return Object.keys(out).length ? out : undefined;
  }

  function showTriggerKind() {
    var kind = radio("trigger-kind");
    document.querySelectorAll(".trigger-line").forEach(function (el) { el.hidden = el.dataset.kind !== kind; });
  }

  function showTextMode() {
    var mode = radio("text-mode");
    document.querySelectorAll(".text-box").forEach(function (el) { el.hidden = el.dataset.mode !== mode; });
  }

  function showProducts() { $("products-spus").hidden = value("products-mode") !== "spus"; }

  // the form (over the definition it started from: fields the form lacks are kept) -> a definition
  function readForm() {
    var d = clone(editor.base) || {};
    d.key = value("rule-key").trim();
    d.name = value("rule-name").trim();
    put(d, "description", value("rule-description").trim());
    d.trigger = radio("trigger-kind") === "daily" ? {daily_at: value("trigger-daily-at"), audience: value("trigger-audience")}
                                                  : {event: value("trigger-event")};

    var c = d.conditions && typeof d.conditions === "object" ? d.conditions : {};
    put(c, "levels", list("cond-levels"));
    put(c, "segments", list("cond-segments"));
    put(c, "tags", list("cond-tags"));
    put(c, "value_yuan", range("cond-value-min", "cond-value-max"));
    put(c, "days_since_last_order", range("cond-days-min", "cond-days-max"));
    put(c, "max_age_minutes", number("cond-max-age", true));
    if ($("cond-first-order").checked) { c.first_order = true; } else { delete c.first_order; }
    d.conditions = c;

    var delay = {minutes: number("delay-minutes")};
    if (delay.minutes === undefined) { delay.minutes = 0; }
    put(delay, "use_cycle_days_before", number("delay-cycle", true));
    d.delay = delay;
    put(d, "send_within_minutes", number("send-within", true));
    d.exits = Array.prototype.map.call(document.querySelectorAll(".exit-check:checked"), function (el) { return el.value; });
    d.category = value("rule-category");
    d.priority = value("rule-priority");
    var cap = {cooldown_days: number("cap-cooldown")};
    if (cap.cooldown_days === undefined) { cap.cooldown_days = 0; }
    put(cap, "per_day", number("cap-per-day", true));
    d.cap = cap;
    d.quiet_hours = radio("quiet-hours") || "hold";
    var pct = number("holdout-pct");
    put(d, "holdout", typeof pct === "number" ? Math.round(pct * 100) / 10000 : pct);
    put(d, "attribution_days", number("attribution-days", true));
    d.requires_approval = $("requires-approval").checked;

    var m = d.message && typeof d.message === "object" ? d.message : {};
    if (radio("text-mode") === "single") {
      m.text = value("text-single");
    } else {
      var text = {};
      document.querySelectorAll(".persona-text").forEach(function (el) {
        if (el.value.trim()) { text[el.dataset.persona] = el.value; }
      });
      m.text = text;
    }
    if (!$("variant-b").disabled) {
      var variants = Array.isArray(m.variants) ? m.variants : [];
      var b = value("variant-b");
      m.variants = (b.trim() ? [{name: (variants[0] && variants[0].name) || "B", text: b}] : []).concat(variants.slice(1));
      if (!m.variants.length) { delete m.variants; }
    }
    put(m, "coupon", value("coupon").trim());
    var products = value("products-mode");
    put(m, "products", products === "items" ? "items" : products === "spus" ? list("products-spus") : undefined);
    m.unsubscribe_hint = $("unsubscribe-hint").checked;
    d.message = m;
    return d;
  }

  // a definition -> the form
  function writeForm(d) {
    d = d && typeof d === "object" ? d : {};
    setValue("rule-name", d.name);
    setValue("rule-key", d.key);
    setValue("rule-description", d.description);
    var t = d.trigger || {};
    setRadio("trigger-kind", t.daily_at ? "daily" : "event");
    if (t.event) { setValue("trigger-event", t.event); }
    setValue("trigger-daily-at", t.daily_at || "10:00");
    if (t.audience) { setValue("trigger-audience", t.audience); }
    showTriggerKind();

    var c = d.conditions || {};
    setValue("cond-levels", (c.levels || []).join(", "));
    setValue("cond-segments", (c.segments || []).join(", "));
    setValue("cond-tags", (c.tags || []).join(", "));
    setValue("cond-value-min", (c.value_yuan || {}).min);
    setValue("cond-value-max", (c.value_yuan || {}).max);
    setValue("cond-days-min", (c.days_since_last_order || {}).min);
    setValue("cond-days-max", (c.days_since_last_order || {}).max);
    setValue("cond-max-age", c.max_age_minutes);
    $("cond-first-order").checked = !!c.first_order;

    var delay = d.delay || {};
    setValue("delay-minutes", delay.minutes !== undefined ? delay.minutes : 0);
    setValue("delay-cycle", delay.use_cycle_days_before);
    setValue("send-within", d.send_within_minutes);
    var exits = d.exits || [];
    document.querySelectorAll(".exit-check").forEach(function (el) { el.checked = exits.indexOf(el.value) >= 0; });
    if (d.category) { setValue("rule-category", d.category); }
    if (d.priority) { setValue("rule-priority", d.priority); }
    var cap = d.cap || {};
    setValue("cap-cooldown", cap.cooldown_days !== undefined ? cap.cooldown_days : 0);
    setValue("cap-per-day", cap.per_day);
    setRadio("quiet-hours", d.quiet_hours === "drop" ? "drop" : "hold");
    setValue("holdout-pct", typeof d.holdout === "number" ? Math.round(d.holdout * 10000) / 100 : d.holdout);
    setValue("attribution-days", d.attribution_days);
    $("requires-approval").checked = !!d.requires_approval;

    var m = d.message || {};
    var single = typeof m.text === "string";
    setRadio("text-mode", single ? "single" : "persona");
    setValue("text-single", single ? m.text : "");
    document.querySelectorAll(".persona-text").forEach(function (el) {
      el.value = !single && m.text && typeof m.text[el.dataset.persona] === "string" ? m.text[el.dataset.persona] : "";
    });
    showTextMode();
    var variants = Array.isArray(m.variants) ? m.variants : [];
    var first = variants[0];
    var plain = !first || typeof first.text === "string";
    $("variant-b").disabled = !plain;
    setValue("variant-b", first && plain ? first.text : "");
    $("variant-hint").textContent = !plain ? "这条规则的 B 文案按人设分别写：请在右侧 JSON 中修改。"
      : variants.length > 1 ? "另有 " + (variants.length - 1) + " 种文案在右侧 JSON 中（此处为第一种「" + first.name + "」）。"
      : "填写后按 A/B 两组发送，效果页分别统计。";
    setValue("coupon", m.coupon);
    setValue("products-mode", m.products === "items" ? "items" : Array.isArray(m.products) ? "spus" : "");
    setValue("products-spus", Array.isArray(m.products) ? m.products.join(", ") : "");
    showProducts();
    $("unsubscribe-hint").checked = m.unsubscribe_hint !== false;
  }

  function syncJson() {
    if (editor.jsonBad) { return; }  // keep the JSON being fixed
    $("rule-json").value = JSON.stringify(readForm(), null, 2);
    $("json-state").textContent = "已与表单同步";
  }

  function formChanged() {
    editor.dirty = true;
    showError("rule-error", "");
    editor.jsonBad = false;
    $("json-error").hidden = true;
    syncJson();
  }

  function jsonChanged() {
    editor.dirty = true;
    showError("rule-error", "");
    var parsed;
    try {
      parsed = JSON.parse($("rule-json").value);
    } catch (e) {
      editor.jsonBad = true;
      $("json-error").textContent = "JSON 格式错误：" + e.message;
      $("json-error").hidden = false;
      $("json-state").textContent = "未同步";
      return;
    }
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
      editor.jsonBad = true;
      $("json-error").textContent = "规则需要是一个 JSON 对象 { … }";
      $("json-error").hidden = false;
      return;
    }
    editor.jsonBad = false;
    $("json-error").hidden = true;
    editor.base = parsed;
    writeForm(parsed);
    if (editor.id) { $("rule-key").value = editor.rule.key; }
    $("json-state").textContent = "已更新表单";
  }

  function insertVariable(variable) {
    var area = editor.lastText && !editor.lastText.closest("[hidden]") && !editor.lastText.disabled ? editor.lastText : null;
    if (!area) {
      area = Array.prototype.filter.call(document.querySelectorAll(".msg-text"), function (el) {
        return !el.closest("[hidden]") && !el.disabled;
      })[0];
    }
    if (!area) { return; }
    var focused = document.activeElement === area;
    var start = focused ? area.selectionStart : area.value.length;
    var end = focused ? area.selectionEnd : area.value.length;
    area.value = area.value.slice(0, start) + variable + area.value.slice(end);
    area.focus();
    area.setSelectionRange(start + variable.length, start + variable.length);
    area.dispatchEvent(new Event("input", {bubbles: true}));
  }

  function fieldName(el) {
    var row = el.closest(".form-row");
    var label = row && row.querySelector(".form-label");
    return el.getAttribute("aria-label") || (label ? label.textContent.trim() : el.id);
  }

  // the number fields' limits, said in Chinese before the API is asked (it names only the field's key)
  function numberProblem() {
    var fields = Array.prototype.filter.call(document.querySelectorAll("#rule-form input[type=number]"), function (el) {
      return !el.closest("[hidden]");
    });
    for (var i = 0; i < fields.length; i++) {
      var el = fields[i];
      if (el.validity && el.validity.badInput) { el.focus(); return fieldName(el) + "：请输入数字"; }
      if (el.value.trim() === "") { continue; }
      var n = Number(el.value);
      var min = el.min !== "" ? Number(el.min) : null;
      var max = el.max !== "" ? Number(el.max) : null;
      var problem = (min !== null && n < min) || (max !== null && n > max)
        ? (max !== null ? "需要在 " + min + " 到 " + max + " 之间" : "不能小于 " + min)
        : el.step === "1" && Math.floor(n) !== n ? "需要是整数" : "";
      if (problem) { el.focus(); return fieldName(el) + "：" + problem; }
    }
    return "";
  }

  function saveRule() {
    if (editor.saving) { return; }
    if (editor.jsonBad) { showError("rule-error", "右侧 JSON 格式有误：请先修正，或改动表单以覆盖它"); return; }
    var d = readForm();
    var problem = !d.name ? "请填写名称" : !d.key ? "请填写规则编号" : numberProblem();
    if (problem) { showError("rule-error", problem); return; }
    editor.saving = true;
    $("rule-save").disabled = true;
    var request = editor.id ? api("PUT", "/api/nudges/rules/" + editor.id, d) : api("POST", "/api/nudges/rules", d);
    request.then(function (result) {
      var saved = result.data;
      var note = saved.status === "pending" ? "，等待审批后生效" : saved.status === "paused" ? "（已暂停，在列表中启用）" : "";
      flash((editor.id ? "已保存「" : "已创建「") + saved.name + "」" + note);
      editor.dirty = false;
      window.location.assign("/nudges/#saved=" + encodeURIComponent(saved.key));
    }).catch(function (error) {
      if (error.status === 401) { return; }
      showError("rule-error", error.message);
      $("rule-error").scrollIntoView({block: "nearest"});
    }).then(function () {
      editor.saving = false;
      $("rule-save").disabled = false;
    });
  }

  function initEditor() {
    editor.id = CFG.rule_id || null;
    var form = $("rule-form");
    form.addEventListener("submit", function (event) { event.preventDefault(); });
    form.addEventListener("input", formChanged);
    form.addEventListener("change", function (event) {
      var t = event.target;
      if (t.name === "trigger-kind") { showTriggerKind(); }
      if (t.name === "text-mode") { showTextMode(); }
      if (t.id === "products-mode") { showProducts(); }
      formChanged();
    });
    document.querySelectorAll(".msg-text").forEach(function (el) {
      el.addEventListener("focus", function () { editor.lastText = el; });
    });
    document.querySelectorAll(".var-btn").forEach(function (button) {
      // keep the text's focus and cursor: act on mousedown, before the textarea blurs
      button.addEventListener("mousedown", function (event) { event.preventDefault(); });
      button.addEventListener("click", function () { insertVariable(button.dataset["var"]); });
    });
    $("rule-json").addEventListener("input", jsonChanged);
    $("rule-save").addEventListener("click", saveRule);
    $("rule-cancel").addEventListener("click", function (event) {
      if (!editor.dirty) { return; }
      event.preventDefault();
      D.confirm("放弃修改", "规则还没有保存，确定离开吗？", "离开", true).then(function (ok) {
        if (ok) { window.location.assign("/nudges/"); }
      });
    });

    var source = editor.id || CFG.copy_from;
    var loading = source ? api("GET", "/api/nudges/rules/" + source).then(function (r) { return r.data; })
                         : Promise.resolve(null);
    loading.then(function (rule) {
      var d = rule ? clone(rule.definition) : newDefinition();
      if (editor.id) {
        editor.rule = rule;
        $("rule-key").readOnly = true;
        $("rule-key-hint").textContent = "规则编号不能修改。";
        D.fill($("rule-state"), [ruleStatusTag(rule.status), rule.requires_approval ? D.tag("需审批", "warning") : null]);
        $("editor-title").textContent = "编辑规则 · " + rule.name;
        $("rule-copy").href = "/nudges/rules/new?from=" + rule.id;
        $("rule-copy").hidden = false;
        document.title = "编辑规则 · " + rule.name + " · 思语客服台";
      } else if (rule) {
        d.key = "";
        d.name = (d.name || "") + "（副本）";
      }
      editor.base = d;
      writeForm(d);
      syncJson();
      $("rule-name").focus();
    }).catch(function (error) {
      showError("rule-error", error.status === 404 ? "没有这条规则（可能已被删除）" : "规则加载失败：" + error.message);
      $("rule-save").disabled = true;
    });
  }

  // ================================================================================================
  // 效果
  // ================================================================================================
  var report = {days: CFG.days || 30, seq: 0};

  function loadReport() {
    var seq = ++report.seq;
    return api("GET", "/api/nudges/report?days=" + report.days).then(function (result) {
      if (seq !== report.seq) { return; }
      showError("report-error", "");
      $("report-updated").textContent = "更新于 " + now();
      renderReport(result.data.rules || []);
    }).catch(function (error) {
      if (seq !== report.seq) { return; }
      showError("report-error", "效果加载失败：" + error.message);
    });
  }

  function statBox(key, label, value, sub) {
    return h("div", {"class": "rstat", dataset: {stat: key}},
      h("div", {"class": "rstat-label", text: label}),
      h("div", {"class": "rstat-value", text: value}),
      sub ? h("div", {"class": "rstat-sub muted small", text: sub}) : null);
  }

  function reasonList(title, counts, kind) {
    var keys = Object.keys(counts || {}).sort(function (a, b) { return counts[b] - counts[a]; });
    return h("div", {"class": "reason-box", dataset: {kind: kind}},
      h("div", {"class": "reason-title", text: title + "（" + sum(counts) + "）"}),
      keys.length ? h("ul", {"class": "reason-list"}, keys.map(function (k) {
        return h("li", {"class": "reason-item", dataset: {reason: k}},
          h("span", {"class": "reason-name", text: reasonText(k) || "其他", title: k}),
          h("span", {"class": "reason-n num", text: counts[k]}));
      })) : h("p", {"class": "muted small reason-none", text: "没有"}));
  }

  function armRow(key, name, arm) {
    return h("tr", {"class": "arm-row", dataset: {arm: key}},
      h("th", {scope: "row", text: name}),
      h("td", {"class": "num arm-n", text: arm.n}),
      h("td", {"class": "num arm-conversions", text: arm.conversions}),
      h("td", {"class": "num arm-rate", text: percent(arm.rate)}),
      h("td", {"class": "num arm-revenue", text: yuan(arm.revenue_yuan)}));
  }

  function upliftView(u) {
    u = u || {};
    var verdict = u.difference === null || u.difference === undefined ? D.tag("样本不足", "info")
      : !u.enough_data ? D.tag("样本不足", "info")
      : u.significant ? D.tag("显著", "success") : D.tag("不显著", "plain");
    verdict.classList.add("uplift-verdict");
    var ci = u.ci ? "95% 置信区间 " + points(u.ci[0]) + " ~ " + points(u.ci[1]) + " 个百分点" : "置信区间 —";
    return h("div", {"class": "uplift" + (u.significant ? " significant" : ""), dataset: {enough: u.enough_data ? "true" : "false"}},
      h("div", {"class": "uplift-main"},
        h("span", {"class": "uplift-label", text: "提升"}),
        h("strong", {"class": "uplift-diff", text: u.difference === null || u.difference === undefined ? "—" : points(u.difference) + " 个百分点"}),
        verdict),
      h("div", {"class": "uplift-detail small"},
        h("span", {"class": "uplift-ci", text: ci}),
        h("span", {"class": "uplift-p", text: pValue(u.p_value)}),
        u.relative_lift !== null && u.relative_lift !== undefined
          ? h("span", {"class": "uplift-rel", text: "相对提升 " + points(u.relative_lift) + "%"}) : null),
      u.enough_data ? null : h("div", {"class": "muted small", text: "样本不足：任一组不足 30 人或预期转化数太少，结论不可靠。"}));
  }

  function variantsTable(variants) {
    return h("div", {"class": "table-wrap variants-wrap"},
      h("table", {"class": "table variants-table"},
        h("thead", {}, h("tr", {}, ["文案", "发送", "转化", "转化率", "回复率", "成交额", "对比对照组的提升"].map(function (t) {
          return h("th", {text: t});
        }))),
        h("tbody", {}, variants.map(function (v) {
          var u = v.uplift || {};
          return h("tr", {"class": "variant-row", dataset: {variant: v.variant}},
            h("td", {text: v.variant || "A"}),
            h("td", {"class": "num", text: v.n}),
            h("td", {"class": "num", text: v.conversions}),
            h("td", {"class": "num", text: percent(v.rate)}),
            h("td", {"class": "num", text: percent(v.reply_rate)}),
            h("td", {"class": "num", text: yuan(v.revenue_yuan)}),
            h("td", {text: (u.difference === null || u.difference === undefined ? "—" : points(u.difference) + " 个百分点") +
                           (u.ci ? "（" + points(u.ci[0]) + " ~ " + points(u.ci[1]) + "）" : "") +
                           (u.enough_data ? (u.significant ? " 显著" : " 不显著") : " 样本不足")}));
        }))));
  }

  function reportCard(r) {
    var exited = sum(r.exited);
    var quiet = !r.sent && !r.holdout && !r.suppressed_total && !exited && !r.scheduled;
    return h("section", {"class": "card report-card" + (quiet ? " quiet" : ""), dataset: {rule: r.rule}},
      h("div", {"class": "card-head"},
        h("h2", {}, h("span", {"class": "report-name", text: r.name}), h("span", {"class": "muted small mono", text: r.rule})),
        h("div", {"class": "card-tools"}, ruleStatusTag(r.status),
          h("span", {"class": "muted small", text: "归因 " + r.attribution_days + " 天"}))),
      quiet ? null : h("div", {"class": "report-stats"},
        statBox("sent", "已发送", r.sent),
        statBox("holdout", "对照组（本应发送）", r.holdout),
        statBox("suppressed", "被拦截", r.suppressed_total),
        statBox("exited", "已退出", exited),
        statBox("scheduled", "待发送", r.scheduled, "当前等待中"),
        statBox("replies", "回复", r.replies, "回复率 " + percent(r.reply_rate))),
      quiet ? h("p", {"class": "empty report-empty", text: "这段时间没有触达记录（样本不足）"}) :
      h("div", {"class": "report-body"},
        h("div", {"class": "report-arms"},
          h("table", {"class": "table arms-table"},
            h("thead", {}, h("tr", {}, h("th", {text: "分组"}), h("th", {"class": "num", text: "人数"}),
                                 h("th", {"class": "num", text: "转化"}), h("th", {"class": "num", text: "转化率"}),
                                 h("th", {"class": "num", text: "成交额"}))),
            h("tbody", {}, armRow("treatment", "实验组（已发送）", r.treatment), armRow("control", "对照组（未发送）", r.control))),
          upliftView(r.uplift)),
        h("div", {"class": "report-reasons"},
          reasonList("被拦截", r.suppressed, "suppressed"),
          reasonList("已退出", r.exited, "exited"))),
      r.variants && r.variants.length ? h("div", {"class": "report-variants"},
        h("div", {"class": "reason-title", text: "A/B 文案"}), variantsTable(r.variants)) : null);
  }

  function renderReport(list) {
    D.fill($("report-cards"), list.length ? list.map(reportCard) : h("p", {"class": "empty", text: "还没有规则"}));
  }

  function initReport() {
    $("report-days").addEventListener("change", function () {
      report.days = Number(this.value) || 30;
      history.replaceState(null, "", window.location.pathname + "?days=" + report.days);
      D.fill($("report-cards"), h("p", {"class": "empty", text: "加载中…"}));
      loadReport();
    });
    loadReport();
  }

  // ================================================================================================
  // 客户触达记录
  // ================================================================================================
  var customer = {number: "", data: null, seq: 0};

  function loadCustomer(number) {
    customer.number = number;
    var seq = ++customer.seq;
    showError("customer-error", "");
    if (!number) { $("customer-view").hidden = true; $("customer-empty").hidden = false; return Promise.resolve(); }
    return api("GET", "/api/nudges/customers/" + encodeURIComponent(number)).then(function (result) {
      if (seq !== customer.seq) { return; }
      customer.data = result.data;
      renderCustomer(result.data);
    }).catch(function (error) {
      if (seq !== customer.seq) { return; }
      $("customer-view").hidden = true;
      $("customer-empty").hidden = false;
      showError("customer-error", error.status === 404 ? "没有这位客户：" + number : "查询失败：" + error.message);
    });
  }

  function fact(k, v) {
    return h("div", {"class": "kv-line"}, h("span", {"class": "kv-k", text: k}), h("span", {"class": "kv-v"}, v));
  }

  function consentTag(granted) { return granted ? D.tag("接收中", "success") : D.tag("已退订", "danger"); }

  function sourceText(source) {
    if (!source) { return ""; }
    var staff = /^staff:(.+)$/.exec(source);
    return staff ? "客服 " + staff[1] : source;
  }

  var HEALTH_PARTS = [["recency", "最近购买", 25], ["frequency", "购买频次", 20], ["monetary", "消费金额", 20],
                      ["service", "服务", 20], ["sentiment", "情绪", 15]];

  function segmentView(seg) {
    if (!seg) { return h("p", {"class": "empty", text: "还没有计算（每天重新计算一次）"}); }
    var parts_ = seg.health_parts || {};
    return [
      h("div", {"class": "segment-head"}, D.tag(seg.segment, "primary"),
        h("span", {"class": "health", dataset: {health: seg.health}}, "健康度 ", h("strong", {text: seg.health}), " / 100")),
      h("div", {"class": "bars health-bars"}, HEALTH_PARTS.map(function (p) {
        var got = Number(parts_[p[0]]) || 0;
        var fill = h("span", {"class": "bar-fill" + (got / p[2] < 0.35 ? " bar-danger" : "")});
        fill.style.width = Math.max(0, Math.min(100, got / p[2] * 100)) + "%";  // CSSOM: allowed by the CSP
        return h("div", {"class": "bar-row"}, h("span", {"class": "bar-label", text: p[1]}),
                 h("span", {"class": "bar-track"}, fill), h("span", {"class": "bar-value", text: got + " / " + p[2]}));
      })),
      h("div", {"class": "muted small segment-facts", text: [
        seg.recency_days === null || seg.recency_days === undefined ? "还没有下过单" : "距上次下单 " + seg.recency_days + " 天",
        "下单 " + (seg.frequency || 0) + " 次", "累计 " + yuan(seg.monetary_yuan),
        seg.median_gap_days ? "下单间隔中位数 " + Math.round(seg.median_gap_days) + " 天" : null,
        seg.computed_at ? "计算于 " + fmt(seg.computed_at) : null].filter(Boolean).join(" · ")})];
  }

  function logRow(entry) {
    var label = reasonText(entry.reason);
    var detail = entry.detail && entry.detail !== label ? entry.detail : "";
    return h("tr", {"class": "log-row", dataset: {status: entry.status, rule: entry.rule}},
      h("td", {"class": "col-time nowrap", text: fmt(entry.at), title: entry.at}),
      h("td", {}, h("span", {text: entry.rule_name || entry.rule}),
        h("div", {"class": "muted small mono", text: entry.rule_name ? entry.rule : "（规则已不存在）"})),
      h("td", {}, logStatusTag(entry.status)),
      h("td", {"class": "col-reason"}, label ? h("span", {"class": "reason-label", text: label}) : null,
        detail ? h("div", {"class": "muted small", text: detail}) : (label ? null : h("span", {"class": "muted", text: "—"}))));
  }

  function renderCustomer(data) {
    var c = data.customer || {};
    $("customer-empty").hidden = true;
    $("customer-view").hidden = false;
    $("customer-title").textContent = "客户 · " + (c.name || c.external_id);
    D.fill($("customer-facts"), [
      fact("编号", h("span", {"class": "mono", text: c.external_id})),
      fact("姓名", c.name || "—"),
      fact("会员等级", c.level || "—"),
      fact("标签", (c.tags || []).length ? (c.tags || []).map(function (t) { return D.tag(t, "plain"); }) : "—")]);
    var consent = data.consent || {};
    var marketing = consent.marketing !== false;
    var state = $("consent-marketing");
    state.dataset.granted = marketing ? "true" : "false";
    D.fill(state, [consentTag(marketing),
                   !marketing && consent.opted_out_at ? h("span", {"class": "muted small", text: fmt(consent.opted_out_at) +
                     (consent.source ? " · " + sourceText(consent.source) : "")}) : null]);
    $("consent-transactional").dataset.granted = consent.transactional !== false ? "true" : "false";
    D.fill($("consent-transactional"), consentTag(consent.transactional !== false));
    $("opt-out").hidden = !marketing;
    $("opt-in").hidden = marketing;
    D.fill($("consent-history"), (data.consent_history || []).slice(0, 5).map(function (e) {
      return h("li", {}, h("span", {"class": "muted", text: fmt(e.at)}), " ",
               (e.category === "marketing" ? "营销消息" : "服务通知") + (e.granted ? "：恢复" : "：退订"),
               h("span", {"class": "muted", text: " · " + sourceText(e.source)}));
    }));
    D.fill($("segment"), segmentView(data.segment));
    var entries = data.entries || [];
    $("log-count").textContent = entries.length;
    D.fill($("log-body"), entries.length ? entries.map(logRow) : emptyRow(4, "还没有给这位客户的触达"));
  }

  function changeConsent(granted) {
    var c = (customer.data || {}).customer || {};
    var name = c.name || c.external_id || customer.number;
    var ask = granted
      ? D.confirm("恢复营销消息", "确认客户 " + name + " 本人同意重新接收营销消息？", "恢复")
      : D.confirm("退订营销消息", "记录客户 " + name + " 本人要求退订营销消息？之后不再向 TA 发送营销提醒，服务通知不受影响。", "退订", true);
    ask.then(function (ok) {
      if (!ok) { return; }
      var button = $(granted ? "opt-in" : "opt-out");
      button.disabled = true;
      api("POST", "/api/nudges/customers/" + encodeURIComponent(customer.number) + "/consent",
          {category: "marketing", granted: granted}).then(function () {
        toast(granted ? "已恢复 " + name + " 的营销消息" : "已为 " + name + " 退订营销消息", "success");
        return loadCustomer(customer.number);
      }).catch(D.failed).then(function () { button.disabled = false; });
    });
  }

  function initCustomers() {
    $("customer-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var number = value("customer-number").trim();
      history.replaceState(null, "", window.location.pathname + (number ? "?customer=" + encodeURIComponent(number) : ""));
      loadCustomer(number);
    });
    $("opt-out").addEventListener("click", function () { changeConsent(false); });
    $("opt-in").addEventListener("click", function () { changeConsent(true); });
    if (CFG.customer) { loadCustomer(CFG.customer); } else { $("customer-number").focus(); }
  }

  // ================================================================================================
  // 事件
  // ================================================================================================
  var events = {seq: 0};

  function loadEvents() {
    var seq = ++events.seq;
    return Promise.all([api("GET", "/api/nudges/events"), api("GET", "/api/nudges/segments")]).then(function (results) {
      if (seq !== events.seq) { return; }
      showError("events-error", "");
      $("events-updated").textContent = "更新于 " + now();
      renderEvents(results[0].data);
      renderSegments(results[1].data);
    }).catch(function (error) {
      if (seq !== events.seq) { return; }
      showError("events-error", "加载失败：" + error.message);
    });
  }

  function renderEvents(data) {
    var counts = data.counts || {};
    document.querySelectorAll("#event-cards .stat-card").forEach(function (el) {
      el.querySelector(".stat-value").textContent = counts[el.dataset.stat] || 0;
      el.classList.toggle("stat-danger", el.dataset.stat === "failed" && !!counts.failed);
    });
    var rows = (data.events || []).map(function (e) {
      var tag = D.tag(labelOf(L.event_status, e.status), EVENT_STATUS_KIND[e.status] || "info");
      tag.classList.add("event-status");
      return h("tr", {"class": "event-row", dataset: {id: e.id, type: e.type, status: e.status}},
        h("td", {"class": "col-time nowrap", text: fmt(e.at, true), title: e.at}),
        h("td", {text: labelOf(L.event_names, e.type), title: e.type}),
        h("td", {}, h("a", {href: "/nudges/customers?customer=" + encodeURIComponent(e.customer), "class": "mono", text: e.customer})),
        h("td", {"class": "mono small", text: e.ref || "—"}),
        h("td", {}, tag),
        h("td", {"class": "small", text: e.note || ""}),
        h("td", {"class": "muted small", text: e.source || ""}));
    });
    D.fill($("events-body"), rows.length ? rows : emptyRow(7, "还没有事件：商家后台推送到 POST /api/events 后显示在这里"));
  }

  function renderSegments(data) {
    var counts = data.counts || {};
    var names = (L.segment_names || []).concat(Object.keys(counts).filter(function (k) {
      return (L.segment_names || []).indexOf(k) < 0;
    }));
    var total = sum(counts);
    var max = Math.max.apply(null, [0].concat(names.map(function (n) { return counts[n] || 0; })));
    D.fill($("segments"), total ? names.map(function (name) {
      var n = counts[name] || 0;
      var fill = h("span", {"class": "bar-fill"});
      fill.style.width = (max ? n / max * 100 : 0) + "%";  // CSSOM: allowed by the CSP
      return h("div", {"class": "bar-row segment-row", dataset: {segment: name}},
        h("span", {"class": "bar-label", text: name}), h("span", {"class": "bar-track"}, fill),
        h("span", {"class": "bar-value", text: n + "（" + percent(n / total) + "）"}));
    }) : h("p", {"class": "empty", text: "还没有计算客户分层（调度器每天计算一次）"}));
    var last = data.last || {};
    $("segments-note").textContent = [
      data.average_health !== null && data.average_health !== undefined ? "平均健康度 " + data.average_health : null,
      last.customers !== undefined ? "客户 " + last.customers + " 位，其中下过单 " + (last.buyers || 0) + " 位" : null,
      last.at ? "计算于 " + fmt(last.at) : null].filter(Boolean).join(" · ");
  }

  function playDemo() {
    var button = $("demo-play");
    button.disabled = true;
    $("demo-result").hidden = true;
    api("POST", "/api/nudges/demo/play").then(function (result) {
      var r = result.data;
      var rejected = (r.rejected || []).length;
      $("demo-result").className = "form-result " + (rejected ? "form-result-error" : "form-result-success");
      $("demo-result").textContent = "已回放 " + r.events + " 个演示事件：接收 " + r.accepted + "，重复 " + r.duplicates +
        "，拒绝 " + rejected + (rejected ? "（" + r.rejected[0].reason + "）" : "") +
        "。调度器处理后，提醒会出现在客户触达记录中（例如 C10001 的购物车提醒）。";
      $("demo-result").hidden = false;
      return loadEvents();
    }).catch(D.failed).then(function () { button.disabled = false; });
  }

  function initEvents() {
    $("events-refresh").addEventListener("click", loadEvents);
    if ($("demo-play")) { $("demo-play").addEventListener("click", playDemo); }
    loadEvents();
    setInterval(function () { if (!document.hidden) { loadEvents(); } }, 15000);
  }

  // ---- the top bar and the page --------------------------------------------------------------
  function topbar() {
    if (CFG.can_work) {
      D.live({});  // supervisors and agents still hear about new handoffs on these pages
    } else {
      var live = $("live-status");
      if (live) { live.hidden = true; }
    }
  }

  topbar();
  ({rules: initRules, editor: initEditor, report: initReport, customers: initCustomers, events: initEvents}[CFG.view] ||
   function () {})();
}());
