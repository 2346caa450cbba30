/* 客服台各页面共用：页面配置、DOM 小工具、JSON API（带 X-CSRF-Token）、提示、对话框、
 * 顶栏（接待状态、退出登录）与实时推送（/api/desk/stream）：新转人工、转给我、SLA 超时在任何页面都会提醒。
 * 各页面脚本（desk.js、corrections.js、stats.js）通过 window.SiyuDesk 使用。 */
(function () {
  "use strict";

  var CFG = JSON.parse(document.getElementById("desk-config").textContent);
  var REASONS = CFG.reasons || {};
  var INTENTS = CFG.intent_names || {};
  var SLA_KINDS = CFG.sla_kinds || {};
  var WORKSPACE = "/desk/";

  // ---- DOM -------------------------------------------------------------------------------------
  function $(id) { return document.getElementById(id); }

  function h(tag, attrs) {
    var el = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) { return; }
      if (key === "class") { el.className = value; }
      else if (key === "text") { el.textContent = value; }
      else if (key === "dataset") {
        Object.keys(value).forEach(function (name) {
          if (value[name] !== null && value[name] !== undefined) { el.dataset[name] = value[name]; }
        });
      }
      else if (key.slice(0, 2) === "on") { el.addEventListener(key.slice(2), value); }
      else { el.setAttribute(key, value === true ? "" : value); }
    });
    for (var i = 2; i < arguments.length; i++) { append(el, arguments[i]); }
    return el;
  }

  function append(el, child) {
    if (child === null || child === undefined || child === false) { return; }
    if (Array.isArray(child)) { child.forEach(function (c) { append(el, c); }); return; }
    el.append(child instanceof Node ? child : String(child));
  }

  function fill(el, children) {
    el.replaceChildren();
    append(el, children);
    return el;
  }

  function tag(text, kind) { return h("span", {"class": "tag tag-" + (kind || "info"), text: text}); }

  // ---- words and times -------------------------------------------------------------------------
  function pad(n) { return n < 10 ? "0" + n : String(n); }

  // 125 -> "02:05"; an hour or more -> "1:02:05"
  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var hours = Math.floor(seconds / 3600);
    var minutes = Math.floor((seconds % 3600) / 60);
    var rest = seconds % 60;
    return hours ? hours + ":" + pad(minutes) + ":" + pad(rest) : pad(minutes) + ":" + pad(rest);
  }

  function when(iso) {
    if (!iso) { return ""; }
    var d = new Date(iso);
    if (isNaN(d)) { return ""; }
    var now = new Date();
    var time = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    if (d.toDateString() === now.toDateString()) { return time; }
    return (d.getFullYear() !== now.getFullYear() ? d.getFullYear() + "-" : "") +
      pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + time.slice(0, 5);
  }

  // an anonymous web visitor is listed by the conversation id ("im:guest-ab12"): show "访客 ab12"
  function visitorLabel(name) {
    var visitor = /^im:(?:guest-)+(.+)$/.exec(name || "");
    return visitor ? "访客 " + visitor[1] : (name || "");
  }

  function reasonLabel(reason) { return reason ? (REASONS[reason] || reason) : ""; }

  // "order_status" -> "查订单 / 物流（order_status）"; short: only the Chinese name
  function intentLabel(intent, short) {
    if (!intent) { return "（无）"; }
    var name = INTENTS[intent];
    if (!name) { return intent; }
    return short ? name : name + "（" + intent + "）";
  }

  function slaKindLabel(kind) { return SLA_KINDS[kind] || kind || ""; }

  function percent(value) {
    return value === null || value === undefined ? "—" : (Math.round(value * 1000) / 10) + "%";
  }

  // ---- toasts ----------------------------------------------------------------------------------
  function toast(text, kind, onclick) {
    var el = h("div", {"class": "toast toast-" + (kind || "info"), role: kind === "error" ? "alert" : "status"}, text);
    if (onclick) {
      el.classList.add("clickable");
      el.addEventListener("click", function () { onclick(); el.remove(); });
    }
    var box = $("toasts");
    box.append(el);
    while (box.children.length > 4) { box.firstElementChild.remove(); }
    setTimeout(function () { el.classList.add("leaving"); }, kind === "error" ? 6000 : 4000);
    setTimeout(function () { el.remove(); }, kind === "error" ? 6400 : 4400);
    return el;
  }

  // ---- the API ---------------------------------------------------------------------------------
  function api(method, path, body) {
    var options = {method: method, credentials: "same-origin", headers: {"Accept": "application/json"}};
    if (method !== "GET") { options.headers["X-CSRF-Token"] = CFG.csrf_token; }
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(path, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (response.status === 401) {
          window.location.assign("/desk/login?next=" + encodeURIComponent(window.location.pathname +
                                                                           window.location.search));
        }
        if (!response.ok) {
          var error = new Error(data.error || ("请求失败（" + response.status + "）"));
          error.status = response.status;
          throw error;
        }
        return {status: response.status, data: data};
      });
    }, function () {
      throw new Error("无法连接服务器，请检查网络");
    });
  }

  function failed(error) { if (error.status !== 401) { toast(error.message, "error"); } }

  // ---- dialogs ---------------------------------------------------------------------------------
  var dialogSeq = 0;

  /* A modal dialog: {title, body, foot, wide, onclose}; returns {el, body, foot, close}. Escape and
   * the × close it; a click beside it does not (a half-filled form must not vanish). */
  function dialog(options) {
    var id = "dialog-title-" + (++dialogSeq);
    var previous = document.activeElement;
    var box = h("div", {"class": "dialog" + (options.wide ? " dialog-wide" : "") + (options["class"] ? " " + options["class"] : ""),
                        role: options.alert ? "alertdialog" : "dialog", "aria-modal": "true", "aria-labelledby": id});
    var mask = h("div", {"class": "dialog-mask"}, box);
    var body = h("div", {"class": "dialog-body"}, options.body);
    var foot = h("div", {"class": "dialog-foot"}, options.foot);
    var closed = false;

    function close() {
      if (closed) { return; }
      closed = true;
      document.removeEventListener("keydown", onKey, true);
      mask.remove();
      if (previous && previous.focus) { previous.focus(); }
      if (options.onclose) { options.onclose(); }
    }

    function onKey(event) {
      if (event.key === "Escape") { event.stopPropagation(); close(); }
    }

    append(box, [h("div", {"class": "dialog-head"}, h("h3", {id: id, text: options.title}),
                   h("button", {type: "button", "class": "dialog-close", "aria-label": "关闭", text: "×", onclick: close})),
                 body, foot]);
    document.addEventListener("keydown", onKey, true);
    $("dialogs").append(mask);
    var first = box.querySelector("[autofocus], input:not([readonly]), select, textarea:not([readonly]), .dialog-foot .btn");
    if (first) { first.focus(); }
    return {el: box, body: body, foot: foot, close: close};
  }

  // a yes / no question; resolves true when confirmed
  function confirm(title, text, okText, danger) {
    return new Promise(function (resolve) {
      var answered = false;
      var ok = h("button", {type: "button", "class": "btn btn-sm " + (danger ? "btn-danger" : "btn-primary"),
                            text: okText || "确定"});
      var cancel = h("button", {type: "button", "class": "btn btn-sm", text: "取消"});
      var d = dialog({title: title, alert: true, "class": "dialog-confirm",
                      body: typeof text === "string" ? h("p", {"class": "confirm-text", text: text}) : text,
                      foot: [cancel, ok], onclose: function () { if (!answered) { resolve(false); } }});
      ok.addEventListener("click", function () { answered = true; d.close(); resolve(true); });
      cancel.addEventListener("click", function () { d.close(); });
      ok.focus();
    });
  }

  // ---- sound -----------------------------------------------------------------------------------
  var audio = null;

  function unlockAudio() {
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      if (audio.state === "suspended") { audio.resume(); }
    } catch (e) { audio = null; }
  }

  function beep() {
    document.body.dataset.beeps = String(Number(document.body.dataset.beeps || 0) + 1);
    try {
      unlockAudio();
      if (!audio) { return; }
      var t = audio.currentTime;
      [[880, 0], [1320, 0.16]].forEach(function (tone) {
        var osc = audio.createOscillator();
        var gain = audio.createGain();
        osc.type = "sine";
        osc.frequency.value = tone[0];
        gain.gain.setValueAtTime(0.0001, t + tone[1]);
        gain.gain.exponentialRampToValueAtTime(0.25, t + tone[1] + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, t + tone[1] + 0.15);
        osc.connect(gain);
        gain.connect(audio.destination);
        osc.start(t + tone[1]);
        osc.stop(t + tone[1] + 0.16);
      });
    } catch (e) { /* no sound device: the title and the toast still tell */ }
  }

  // ---- the top bar -----------------------------------------------------------------------------
  function setPresence(presence) {
    api("POST", "/api/desk/presence", {presence: presence}).then(function (result) {
      CFG.presence = result.data.presence;
      document.querySelectorAll(".presence-btn").forEach(function (el) {
        el.classList.toggle("active", el.dataset.presence === CFG.presence);
      });
      toast(CFG.presence === "online" ? "已切换为在线，将接收新会话" : "已切换为离开", "info");
    }).catch(failed);
  }

  function wireTopbar() {
    document.querySelectorAll(".presence-btn").forEach(function (el) {
      el.addEventListener("click", function () { setPresence(el.dataset.presence); });
    });
    $("logout").addEventListener("click", function () {
      api("POST", "/api/logout").catch(function () { /* logged out either way */ }).then(function () {
        window.location.assign("/desk/login");
      });
    });
    // browsers start sound only after the user has touched the page
    document.addEventListener("pointerdown", unlockAudio, {once: true});
    document.addEventListener("keydown", unlockAudio, {once: true});
  }

  // ---- live updates and what every page announces ----------------------------------------------
  var D = {};

  // open a conversation: the workspace opens it in place (desk.js replaces this), other pages go there
  D.open = function (id, tab) {
    window.location.assign(WORKSPACE + (tab ? "?tab=" + tab : "") + "#c=" + id);
  };

  function announce(event) {
    var customer = visitorLabel(event.customer || "");
    if (event.kind === "queued") {
      beep();
      toast("新的转人工：" + customer + "（" + reasonLabel(event.reason) + "）", "warning",
            function () { D.open(event.conversation, "queued"); });
    } else if ((event.kind === "assigned" || event.kind === "transferred") && event.assignee === CFG.username &&
               event.actor !== "staff:" + CFG.username) {
      beep();
      toast((event.text || "有会话转给了你"), "warning", function () { D.open(event.conversation, "mine"); });
    } else if (event.kind === "sla_breach" && CFG.can_work && CFG.presence === "online") {
      // a target missed: re-announced to the agents on duty
      beep();
      var el = toast((event.text || "超时") + "：" + customer, "error",
                     function () { D.open(event.conversation, event.state === "queued" ? "queued" : "all"); });
      el.classList.add("toast-sla");
      el.dataset.conversation = event.conversation;
    }
  }

  function announceMessage(event) {
    if (event.assignee === CFG.username) {
      toast("顾客 " + visitorLabel(event.customer || "") + "：" + (event.text || ""), "info",
            function () { D.open(event.conversation, "mine"); });
    }
  }

  function setLive(ok, text) {
    var el = $("live-status");
    if (!el) { return; }
    el.classList.toggle("ok", ok);
    el.classList.toggle("down", !ok);
    el.querySelector("span").textContent = text;
  }

  /* Listen to /api/desk/stream. handlers: desk(event), message(event) (replaces the default notice
   * to the holder), reconnected() (events may have been missed: reload). */
  function live(handlers) {
    handlers = handlers || {};
    var firstHello = true;

    function connect() {
      var source = new EventSource("/api/desk/stream");
      source.addEventListener("hello", function () {
        setLive(true, "实时连接正常");
        if (!firstHello && handlers.reconnected) { handlers.reconnected(); }
        firstHello = false;
      });
      source.addEventListener("desk", function (e) {
        var event = JSON.parse(e.data);
        announce(event);
        if (handlers.desk) { handlers.desk(event); }
      });
      source.addEventListener("message", function (e) {
        var event = JSON.parse(e.data);
        (handlers.message || announceMessage)(event);
      });
      source.addEventListener("resync", function () { if (handlers.reconnected) { handlers.reconnected(); } });
      source.addEventListener("error", function () {
        setLive(false, "实时连接中断，正在重连…");
        if (source.readyState === EventSource.CLOSED) {
          // refused (e.g. the session ended): check the login, then try again
          setTimeout(function () {
            api("GET", "/api/me").then(connect, function () { setTimeout(connect, 5000); });
          }, 3000);
        }
      });
    }

    connect();
  }

  Object.assign(D, {
    CFG: CFG, $: $, h: h, append: append, fill: fill, tag: tag, pad: pad, duration: duration, when: when,
    visitorLabel: visitorLabel, reasonLabel: reasonLabel, intentLabel: intentLabel, slaKindLabel: slaKindLabel,
    percent: percent, toast: toast, api: api, failed: failed, dialog: dialog, confirm: confirm, beep: beep,
    live: live
  });
  window.SiyuDesk = D;
  wireTopbar();
}());
