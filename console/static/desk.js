/* 会话工作台：队列（按 SLA 着色，主管看到超时旗标）、会话记录（每条顾客 / 机器人消息可“答错了”记入错题本）、
 * 顾客信息与实时推送。数据全部来自 JSON API（/api/desk/...）；实时更新来自 /api/desk/stream（SSE，
 * 经 common.js，它也负责新转人工 / 转给我 / SLA 超时的提醒）。所有修改类请求都带 X-CSRF-Token。
 * 页面不加载任何外部资源。 */
(function () {
  "use strict";

  var D = window.SiyuDesk;
  var CFG = D.CFG;
  var $ = D.$, h = D.h, tag = D.tag, duration = D.duration, when = D.when, api = D.api, toast = D.toast;
  var failed = D.failed, visitorLabel = D.visitorLabel, reasonLabel = D.reasonLabel, intentLabel = D.intentLabel;
  var PRIORITIES = CFG.priorities || {};
  var STATE_NAMES = {bot: "机器人接待中", queued: "待接入", assigned: "人工接待中", closed: "已结束"};
  var STATE_TAGS = {bot: "info", queued: "warning", assigned: "success", closed: "plain"};
  var PRIORITY_TAGS = {"3": "danger", "2": "warning", "1": "primary", "0": "info"};
  var DELIVERY = {delivered: ["已送达", "success"], queued: ["排队中", "warning"], failed: ["失败", "danger"],
                  refused: ["未发送", "danger"]};
  var CHANNELS = {im: "网页聊天", wecom_kf: "微信客服", mp: "公众号", mini: "小程序", group: "微信群"};
  var ORDER_STATUS = {pending_payment: ["待付款", "warning"], paid: ["待发货", "primary"], shipped: ["已发货", "primary"],
                      delivered: ["已签收", "success"], completed: ["已完成", "success"], cancelled: ["已取消", "info"],
                      refunding: ["退款中", "warning"], refunded: ["已退款", "info"]};
  var TICKET_KIND = {"return": "退货", refund: "退款", exchange: "换货", repair: "维修", complaint: "投诉",
                     change_order: "改订单", cancel_order: "取消订单", human_request: "人工回电"};
  var TICKET_STATUS = {open: ["待处理", "warning"], processing: ["处理中", "primary"], resolved: ["已解决", "success"],
                       rejected: ["已驳回", "danger"], closed: ["已关闭", "info"]};
  // without service targets (summary.sla empty) the wait is coloured by these fixed thresholds
  var WAIT_WARN_S = 120;
  var WAIT_ALERT_S = 300;
  var SLA_TAGS = {ok: ["SLA 正常", "success"], warning: ["即将超时", "warning"], missed: ["已超时", "danger"]};
  var SNOOZE_MINUTES = 30;

  var state = {
    tab: "queued", filter: "", items: [], counts: {}, listAt: 0, listSeq: 0,
    openId: null, detail: null, detailAt: 0, detailSeq: 0, context: null, staff: [],
    unread: {}, breaches: {}, corrected: {}, slaTimer: null, slaUsed: {}
  };

  function customerName(item) { return visitorLabel(item.customer || ""); }

  function staffName(username) {
    if (!username) { return ""; }
    if (username === CFG.username) { return CFG.display_name || username; }
    for (var i = 0; i < state.staff.length; i++) {
      if (state.staff[i].username === username) { return state.staff[i].display_name || username; }
    }
    return username;
  }

  // ---- the queue -------------------------------------------------------------------------------
  function listQuery() {
    if (state.tab === "queued") { return "state=queued"; }
    if (state.tab === "mine") { return "state=assigned&mine=1"; }
    return state.filter ? "state=" + state.filter : "";
  }

  function loadList() {
    var seq = ++state.listSeq;
    return api("GET", "/api/desk/conversations?" + listQuery()).then(function (result) {
      if (seq !== state.listSeq) { return; }
      state.items = result.data.conversations || [];
      state.counts = result.data.counts || {};
      state.listAt = performance.now();
      renderCounts();
      renderList();
      scheduleSlaReload();
    }).catch(failed);
  }

  function renderCounts() {
    var c = state.counts;
    var all = (c.queued || 0) + (c.assigned || 0) + (c.bot || 0) + (c.closed || 0);
    var numbers = {queued: c.queued || 0, mine: c.mine || 0, all: all};
    document.querySelectorAll("[data-count]").forEach(function (el) {
      el.textContent = numbers[el.getAttribute("data-count")];
    });
    document.querySelector("[data-count=queued]").classList.toggle("hot", numbers.queued > 0);
    document.title = (numbers.queued ? "(" + numbers.queued + ") " : "") + "会话工作台";
  }

  function renderList() {
    var list = $("queue-list");
    list.replaceChildren();
    state.items.forEach(function (item) { list.append(queueItem(item)); });
    $("queue-empty").hidden = state.items.length > 0;
    $("queue-empty").textContent = {queued: "暂无待接入的会话", mine: "你当前没有接待中的会话"}[state.tab] || "暂无会话";
    tick();
  }

  // ---- service targets (summary.sla: {first_response|next_response|resolution: clock, state}) ---
  function slaClocks(sla) {
    return ["first_response", "next_response", "resolution"].filter(function (kind) {
      return sla && sla[kind];
    }).map(function (kind) { return {kind: kind, clock: sla[kind]}; });
  }

  function slaTitle(sla) {
    var names = {ok: "正常", warning: "即将超时", missed: "已超时"};
    return slaClocks(sla).map(function (c) {
      return D.slaKindLabel(c.kind) + "：已用 " + duration(c.clock.used_s) + " / 目标 " + duration(c.clock.target_s) +
        "（" + (names[c.clock.state] || c.clock.state) + (c.clock.running ? "" : "，已完成") + "）";
    }).join("\n") + "\n按营业时间计，刷新列表时更新";
  }

  function missedKinds(sla) {
    return slaClocks(sla).filter(function (c) { return c.clock.state === "missed"; }).map(function (c) {
      return D.slaKindLabel(c.kind);
    });
  }

  // the SLA tag of a row: none while all is well, orange when 80 % of a target is used, red when missed
  function slaTag(item) {
    var sla = item.sla || {};
    var flagged = state.breaches[item.id];
    if (CFG.supervises && (sla.state === "missed" || flagged)) {
      var missed = missedKinds(sla);
      var text = missed.length ? "超时未" + missed.join("、") : flagged;
      return h("span", {"class": "tag tag-danger sla-flag", title: slaTitle(sla), text: "⚑ " + text});
    }
    if (sla.state === "missed" || sla.state === "warning") {
      var look = SLA_TAGS[sla.state];
      return h("span", {"class": "tag tag-" + look[1] + " sla-tag", title: slaTitle(sla), dataset: {sla: sla.state},
                        text: look[0]});
    }
    return null;
  }

  // a list shows the state at loading time: load again when the next clock crosses 80 % or 100 %
  function scheduleSlaReload() {
    clearTimeout(state.slaTimer);
    var soonest = Infinity;
    var now = performance.now();
    var seen = {};
    state.items.forEach(function (item) {
      slaClocks(item.sla).forEach(function (c) {
        var key = item.id + ":" + c.kind;
        var before = state.slaUsed[key];
        // a clock that stood still for seconds is outside business hours: nothing to wait for
        var still = before && before.used === c.clock.used_s && now - before.at >= 2000;
        seen[key] = before && now - before.at < 2000 ? before : {used: c.clock.used_s, at: now};
        if (!c.clock.running || c.clock.state === "missed" || still) { return; }
        var next = c.clock.state === "ok" ? c.clock.target_s * 0.8 : c.clock.target_s;
        soonest = Math.min(soonest, next - c.clock.used_s);
      });
    });
    state.slaUsed = seen;
    if (soonest < 30) {  // later ones: the regular reload comes first
      state.slaTimer = setTimeout(loadList, (Math.max(soonest, 1) + 1) * 1000);
    }
  }

  function queueItem(item) {
    var live = item.state === "queued" || item.state === "assigned";
    var sla = item.sla || {};
    var tags = [];
    if (live) { tags.push(tag(item.priority_name || PRIORITIES[item.priority] || "", PRIORITY_TAGS[item.priority])); }
    if (state.tab === "all" || !live) { tags.push(tag(STATE_NAMES[item.state] || item.state, STATE_TAGS[item.state])); }
    if (item.snoozed) { tags.push(tag("稍后处理", "plain")); }
    if (live) { tags.push(slaTag(item)); }
    var reason = reasonLabel(item.reason);
    var side = [];
    if (item.waiting_seconds !== null && item.waiting_seconds !== undefined) {
      side.push(h("span", {"class": "wait", title: sla.state ? slaTitle(sla) : "等待时长",
                           dataset: {base: item.waiting_seconds, sla: sla.state || null}}));
    } else if (item.state === "assigned") {
      side.push(h("span", {"class": "wait done" + (sla.state ? " sla-" + sla.state : ""), text: "已回复",
                           title: sla.state ? slaTitle(sla) : null}));
    }
    side.push(h("span", {"class": "assignee", text: item.assignee ? staffName(item.assignee) : "未分配"}));
    if (item.state === "queued" && CFG.can_work) {
      side.push(h("button", {type: "button", "class": "btn btn-primary btn-xs claim-btn", text: "接入",
                             onclick: function (event) { event.stopPropagation(); claim(item.id); }}));
    }
    var breached = live && CFG.supervises && (sla.state === "missed" || state.breaches[item.id]);
    var li = h("li", {"class": "queue-item" + (item.id === state.openId ? " active" : "") +
                        (state.unread[item.id] ? " unread" : "") + (breached ? " breached" : ""),
                      dataset: {id: item.id, state: item.state, sla: sla.state || null}, tabindex: "0",
                      onclick: function () { openConversation(item.id); },
                      onkeydown: function (event) { if (event.key === "Enter") { openConversation(item.id); } }},
      h("div", {"class": "qi-main"},
        h("div", {"class": "qi-line"}, h("span", {"class": "qi-name", text: customerName(item), title: item.conversation_id}), tags),
        h("div", {"class": "qi-reason muted", title: item.reason_text || ""},
          reason ? h("span", {"class": "reason", text: reason}) : null,
          item.reason_text ? " · " + item.reason_text : (reason ? "" : CHANNELS[item.channel] || item.channel))),
      h("div", {"class": "qi-side"}, side));
    return li;
  }

  // ---- one conversation ------------------------------------------------------------------------
  function openConversation(id) {
    if (state.openId !== id) {
      state.openId = id;
      state.detail = null;
      state.context = null;
      delete state.unread[id];
      $("reply-text").value = "";
      $("note-text").value = "";
      history.replaceState(null, "", "#c=" + id);
      document.querySelectorAll(".queue-item").forEach(function (el) {
        el.classList.toggle("active", Number(el.dataset.id) === id);
        if (Number(el.dataset.id) === id) { el.classList.remove("unread"); }
      });
      $("conv-placeholder").hidden = true;
      $("conv").hidden = false;
      $("transcript").replaceChildren(h("p", {"class": "empty", text: "加载中…"}));
      $("context").replaceChildren(h("p", {"class": "empty", text: "加载中…"}));
    }
    loadDetail(true);
    loadContext();
  }

  function closeConversation() {
    state.openId = null;
    state.detail = null;
    history.replaceState(null, "", "#");
    $("conv").hidden = true;
    $("conv-placeholder").hidden = false;
    $("context").replaceChildren(h("p", {"class": "empty", text: "选择会话后显示顾客信息"}));
  }

  function loadDetail(scrollToEnd) {
    var id = state.openId;
    if (!id) { return Promise.resolve(); }
    var seq = ++state.detailSeq;
    return api("GET", "/api/desk/conversations/" + id).then(function (result) {
      if (seq !== state.detailSeq || id !== state.openId) { return; }
      state.detail = result.data;
      state.detailAt = performance.now();
      renderDetail(scrollToEnd);
    }).catch(function (error) {
      if (error.status === 404) { closeConversation(); }
      if (error.status !== 401) { failed(error); }
    });
  }

  function loadContext() {
    var id = state.openId;
    if (!id) { return; }
    api("GET", "/api/desk/conversations/" + id + "/context").then(function (result) {
      if (id !== state.openId) { return; }
      state.context = result.data;
      renderContext();
    }).catch(function (error) {
      $("context").replaceChildren(h("p", {"class": "empty", text: "顾客信息加载失败：" + error.message}));
    });
  }

  function holds(d) { return d.state === "assigned" && d.assignee === CFG.username; }

  function renderDetail(scrollToEnd) {
    var d = state.detail;
    $("conv-customer").textContent = customerName(d);
    var tags = [tag(STATE_NAMES[d.state] || d.state, STATE_TAGS[d.state])];
    if (d.state === "queued" || d.state === "assigned") {
      tags.push(tag(d.priority_name || PRIORITIES[d.priority] || "", PRIORITY_TAGS[d.priority]));
    }
    if (d.reason) { tags.push(tag(reasonLabel(d.reason), "plain")); }
    if (d.snoozed) { tags.push(tag("稍后处理至 " + when(d.snoozed_until), "plain")); }
    slaClocks(d.sla).forEach(function (c) {  // only the clocks that need attention
      if (c.clock.state === "ok") { return; }
      var missed = c.clock.state === "missed";
      tags.push(h("span", {"class": "tag tag-" + (missed ? "danger" : "warning") + " sla-tag", title: slaTitle(d.sla),
                           dataset: {sla: c.clock.state}},
                  (missed ? "⚑ " : "") + D.slaKindLabel(c.kind) + (missed ? "已超时" : "即将超时")));
    });
    $("conv-tags").replaceChildren.apply($("conv-tags"), tags);
    var sub = [CHANNELS[d.channel] || d.channel, d.conversation_id];
    if (d.assignee) { sub.push("接待人：" + staffName(d.assignee)); }
    if (d.queued_at && d.state !== "bot") { sub.push("转人工：" + when(d.queued_at)); }
    if (d.ticket_no) { sub.push("工单 " + d.ticket_no); }
    if (d.reason_text) { sub.push("“" + d.reason_text + "”"); }
    $("conv-sub").textContent = sub.join(" · ");
    renderActions(d);
    renderComposer(d);  // first: its notice changes the transcript's height, and the transcript scrolls to its end
    renderTranscript(d, scrollToEnd);
  }

  function renderActions(d) {
    var mine = holds(d);
    var sup = CFG.supervises;
    var handling = d.state === "assigned" && (mine || sup);
    $("btn-claim").hidden = !(CFG.can_work && (d.state === "queued" || d.state === "bot" || d.state === "closed"));
    $("btn-claim").textContent = d.state === "queued" ? "接入" : "接入（接管机器人）";
    $("btn-handback").hidden = !handling;
    $("btn-snooze").hidden = !handling;
    $("btn-end").hidden = !(handling || (d.state === "queued" && sup));
    $("assign-box").hidden = !(CFG.can_work && (sup || mine));
    if (!$("assign-box").hidden) { fillAssignSelect(); }
  }

  function fillAssignSelect() {
    var select = $("assign-select");
    var chosen = select.value;
    var options = [h("option", {value: "", text: "转给…"})];
    state.staff.forEach(function (person) {
      if (person.disabled || (state.detail && person.username === state.detail.assignee)) { return; }
      var label = (person.display_name || person.username) + "（" + (person.presence === "online" ? "在线" : "离开") +
        " · 接待 " + person.holding + "）";
      options.push(h("option", {value: person.username, text: label}));
    });
    select.replaceChildren.apply(select, options);
    select.value = chosen;
    if (select.value !== chosen) { select.value = ""; }
  }

  function loadStaff() {
    return api("GET", "/api/desk/staff").then(function (result) {
      state.staff = result.data.staff || [];
      if (state.detail && !$("assign-box").hidden) { fillAssignSelect(); }
    }).catch(function () { /* the list is a convenience: the assign call reports real errors */ });
  }

  // "答错了": staff may put a customer message (or the bot turn answering it) in the 错题本
  function canCorrect(entry, asked) {
    if (!CFG.can_work || !entry.event_id) { return false; }
    var words = entry.from === "customer" ? entry : asked;
    return !!(words && words.text && words.text.charAt(0) !== "/");
  }

  function wrongButton(entry, asked) {
    if (state.corrected[entry.event_id]) {
      return h("span", {"class": "corrected-mark", text: "✓ 已记入错题本"});
    }
    if (!canCorrect(entry, asked)) { return null; }
    return h("button", {type: "button", "class": "mark-wrong", title: "机器人理解或回答错了：记入错题本",
                        dataset: {event: entry.event_id},
                        onclick: function () { openCorrection(entry, asked); }}, "答错了");
  }

  function intentChip(entry) {
    if (!entry || !entry.intent) { return null; }
    var low = entry.confidence < 0.6;
    return h("span", {"class": "intent" + (low ? " low" : ""), title: "识别的意图与置信度：" + entry.intent},
      "意图 " + intentLabel(entry.intent, true) + " " + Number(entry.confidence || 0).toFixed(2));
  }

  // asked: the customer message before this entry (what a bot turn answered)
  function entryNode(entry, asked) {
    var time = when(entry.at);
    if (entry.from === "customer") {
      var meta = [h("span", {text: time}), intentChip(entry)];
      (entry.entities || []).forEach(function (e) {
        meta.push(h("span", {"class": "entity", text: e.entity + "=" + e.value}));
      });
      meta.push(wrongButton(entry, asked));
      return h("div", {"class": "msg msg-customer", dataset: {event: entry.event_id}},
        h("div", {"class": "who", text: "顾客"}),
        h("div", {"class": "bubble", text: entry.text}),
        h("div", {"class": "meta"}, meta));
    }
    if (entry.from === "bot") {
      return h("div", {"class": "msg msg-bot", dataset: {event: entry.event_id}},
        h("div", {"class": "who", text: "机器人"}),
        h("div", {"class": "bubble"}, entry.text,
          (entry.buttons || []).length ? h("div", {"class": "chips"},
            entry.buttons.map(function (b) { return h("span", {"class": "chip", text: b}); })) : null),
        h("div", {"class": "meta"}, wrongButton(entry, asked), h("span", {text: time}),
          entry.response ? h("span", {"class": "response", text: entry.response}) : null));
    }
    if (entry.from === "agent" && entry.kind === "note") {
      return h("div", {"class": "note"},
        h("div", {"class": "note-head"}, h("strong", {text: "内部备注"}),
          h("span", {text: staffName(entry.author) + " · " + time})),
        h("div", {"class": "note-text", text: entry.text}));
    }
    if (entry.from === "agent") {
      var delivery = DELIVERY[entry.delivery] || [entry.delivery || "未知", "info"];
      return h("div", {"class": "msg msg-agent"},
        h("div", {"class": "who", text: staffName(entry.author)}),
        h("div", {"class": "bubble", text: entry.text}),
        h("div", {"class": "meta"}, h("span", {text: time}),
          h("span", {"class": "delivery tag tag-" + delivery[1], text: delivery[0]}),
          entry.delivery_detail ? h("span", {"class": "delivery-detail", text: entry.delivery_detail}) : null));
    }
    if (entry.kind === "slot") {
      var isSource = entry.slot === "kb_source";
      return h("div", {"class": "step slot" + (isSource ? " source" : "")},
        h("span", {text: isSource ? "知识来源：" + entry.value : "槽位 " + entry.text}));
    }
    return h("div", {"class": "step"}, h("span", {text: entry.text + (time ? " · " + time : "")}));
  }

  function renderTranscript(d, scrollToEnd) {
    var box = $("transcript");
    var nearEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    var asked = null;
    var nodes = (d.messages || []).map(function (entry) {
      var node = entryNode(entry, asked);
      if (entry.from === "customer") { asked = entry; }
      return node;
    });
    if (!nodes.length) { nodes = [h("p", {"class": "empty", text: "暂无消息"})]; }
    box.replaceChildren.apply(box, nodes);
    if (scrollToEnd || nearEnd) { box.scrollTop = box.scrollHeight; }
  }

  function replyBlock(d) {
    if (!CFG.can_work) { return "你的角色不能回复顾客"; }
    if (d.state !== "assigned") { return "接入会话后才能回复顾客"; }
    if (d.assignee !== CFG.username) { return "会话由 " + staffName(d.assignee) + " 接待，只有接待人可以回复"; }
    var w = d.window || {};
    if (w.open === false) { return w.reason || "回复窗口已关闭，暂时不能回复"; }
    return "";
  }

  function renderComposer(d) {
    var blocked = replyBlock(d);
    $("reply-text").disabled = !!blocked;
    $("btn-send").disabled = !!blocked;
    $("canned-btn").disabled = !!blocked;
    $("reply-disabled").hidden = !blocked;
    $("reply-disabled").textContent = blocked;
    if (blocked) { $("canned-panel").hidden = true; }
    renderWindow();
  }

  function renderWindow() {
    var d = state.detail;
    var box = $("window-info");
    var w = d && d.window;
    if (!w || !w.limited || (d.state !== "assigned" && d.state !== "queued")) { box.hidden = true; return; }
    box.hidden = false;
    if (!w.open) {
      box.className = "window-info closed";
      box.textContent = "回复窗口已关闭：" + (w.reason || "");
      return;
    }
    var left = (w.seconds_left || 0) - (performance.now() - state.detailAt) / 1000;
    if (left <= 0) {
      box.className = "window-info closed";
      box.textContent = "回复窗口已到期";
      if (!state.windowReloaded) { state.windowReloaded = true; loadDetail(); }
      return;
    }
    state.windowReloaded = false;
    box.className = "window-info" + (left < 3600 ? " soon" : "");
    box.textContent = "回复窗口剩余 " + duration(left) + "（" + when(w.closes_at) + " 关闭）· 还可发送 " +
      w.remaining + " 条";
  }

  // ---- customer context ------------------------------------------------------------------------
  function section(title, body, extra) {
    return h("section", {"class": "ctx-card"}, h("h3", {}, title, extra ? h("span", {"class": "muted", text: extra}) : null), body);
  }

  function row(label, value) {
    return h("div", {"class": "kv"}, h("span", {"class": "k", text: label}), h("span", {"class": "v"}, value));
  }

  function renderContext() {
    var c = state.context;
    var parts = [];
    var customer = c.customer;
    if (customer) {
      parts.push(section("顾客", [
        h("div", {"class": "ctx-name"}, h("strong", {text: customer.name || "（未命名）"}),
          customer.level ? tag(customer.level, "warning") : null),
        row("客户编号", customer.external_id || customer.id),
        row("积分", customer.points),
        row("手机", customer.phone),
        row("营销消息", customer.marketing_opt_out ? tag("已退订", "info") : "接收"),
        c.segment ? row("客户分层", c.segment.segment + " · 健康分 " + c.segment.health) : null,
        customer.external_id ? row("触达记录", h("a", {href: "/nudges/customers?customer=" +
          encodeURIComponent(customer.external_id), target: "_blank", rel: "noopener",
          text: "查看提醒和退订"})) : null]));
    } else {
      parts.push(section("顾客", [h("p", {"class": "muted", text: "匿名访客，未关联顾客档案"}),
                                  row("会话", c.conversation_id)]));
    }
    var identities = (c.identities || []).map(function (i) {
      return h("li", {}, tag(CHANNELS[i.channel] || i.channel, "plain"), " ", i.external_id);
    });
    if (!identities.length) { identities = [h("li", {}, tag(CHANNELS[c.channel] || c.channel, "plain"), " 当前会话")]; }
    parts.push(section("渠道身份", h("ul", {"class": "ctx-list"}, identities)));

    var orders = (c.orders || []).map(function (o) {
      var status = ORDER_STATUS[o.status] || [o.status, "info"];
      return h("li", {"class": "order"},
        h("div", {"class": "line"}, h("strong", {text: o.order_no}), tag(status[0], status[1])),
        h("div", {"class": "muted small", text: "¥" + Number(o.total_yuan).toFixed(2) + " · " + when(o.created_at)}),
        (o.items || []).length ? h("div", {"class": "small", text: o.items.join("；")}) : null,
        o.tracking_no ? h("div", {"class": "small", text: (o.carrier || "") + " " + o.tracking_no}) : null,
        o.logistics ? h("div", {"class": "logistics small"},
          h("span", {"class": "dot-line"}), (o.logistics.text || "") +
          (o.logistics.location ? "（" + o.logistics.location + "）" : "") + " · " + when(o.logistics.at)) : null);
    });
    parts.push(section("最近订单", orders.length ? h("ul", {"class": "ctx-list"}, orders)
                                                 : h("p", {"class": "muted small", text: "没有订单"}),
                       orders.length ? "（" + orders.length + "）" : ""));

    var tickets = (c.tickets || []).map(function (t) {
      var status = TICKET_STATUS[t.status] || [t.status, "info"];
      return h("li", {}, h("div", {"class": "line"}, h("strong", {text: t.ticket_no}),
                           tag(TICKET_KIND[t.kind] || t.kind, "plain"), tag(status[0], status[1])),
               h("div", {"class": "muted small", text: (t.reason || "") + " · " + when(t.created_at)}));
    });
    parts.push(section("工单", tickets.length ? h("ul", {"class": "ctx-list"}, tickets)
                                             : h("p", {"class": "muted small", text: "没有工单"})));

    var handoffs = (c.handoffs || []).map(function (x) {
      return h("li", {}, h("div", {"class": "line"}, h("span", {text: when(x.at)}), tag(reasonLabel(x.reason), "plain")),
               x.text ? h("div", {"class": "muted small", text: "“" + x.text + "”"}) : null);
    });
    parts.push(section("转人工记录", handoffs.length ? h("ul", {"class": "ctx-list"}, handoffs)
                                                : h("p", {"class": "muted small", text: "没有记录"})));
    $("context").replaceChildren.apply($("context"), parts);
  }

  // ---- actions ---------------------------------------------------------------------------------
  function act(path, body, done) {
    var id = state.openId;
    return api("POST", "/api/desk/conversations/" + id + "/" + path, body).then(function (result) {
      if (done) { done(result); }
      loadList();
      if (id === state.openId) { loadDetail(true); }
      return result;
    }).catch(function (error) {
      failed(error);
      loadList();
      if (id === state.openId) { loadDetail(); }
    });
  }

  function claim(id) {
    return api("POST", "/api/desk/conversations/" + id + "/claim").then(function () {
      toast("已接入会话，可以回复顾客了", "success");
      setTab("mine");
      openConversation(id);
    }).catch(function (error) {
      failed(error);
      loadList();
      if (id === state.openId) { loadDetail(); }
    });
  }

  function sendReply() {
    var text = $("reply-text").value.trim();
    if (!text || $("btn-send").disabled) { return; }
    $("btn-send").disabled = true;
    act("reply", {text: text}, function (result) {
      $("reply-text").value = "";
      updateCount();
      var d = result.data;
      if (d.delivery === "delivered") { toast("回复已送达", "success"); }
      else if (d.delivery === "queued") { toast("回复排队中" + (d.delivery_detail ? "：" + d.delivery_detail : ""), "info"); }
      else { toast("回复未发出：" + (d.delivery_detail || d.delivery), "error"); }
    }).then(function () { if (state.detail) { renderComposer(state.detail); } });
  }

  function addNote() {
    var text = $("note-text").value.trim();
    if (!text) { return; }
    $("btn-note").disabled = true;
    act("note", {text: text}, function () {
      $("note-text").value = "";
      toast("备注已添加", "success");
    }).then(function () { $("btn-note").disabled = false; });
  }

  function updateCount() { $("reply-count").textContent = $("reply-text").value.length + "/2000"; }

  // ---- 错题本: "答错了" ----------------------------------------------------------------------------
  var intentsLoaded = null;

  function loadIntents() {
    intentsLoaded = intentsLoaded || api("GET", "/api/desk/intents").then(function (result) {
      return result.data.intents || [];
    }).catch(function (error) { intentsLoaded = null; throw error; });
    return intentsLoaded;
  }

  function field(label, control, hint, forId) {
    return h("div", {"class": "form-row"}, h("label", {"class": "form-label", "for": forId || null, text: label}),
             h("div", {"class": "form-control"}, control, hint ? h("div", {"class": "form-hint", text: hint}) : null));
  }

  /* The small form: the customer's words, what the bot understood (and answered), the right intent
   * and / or the right answer (a knowledge entry, or a new answer with an optional standard
   * question), a note. POST /api/desk/conversations/{id}/corrections; the outcome is shown in place. */
  function openCorrection(entry, asked) {
    var conversation = state.openId;
    var words = entry.from === "customer" ? entry : asked;
    var answerMode = "none";
    var chosenEntry = null;
    var searchTimer = null;

    var intentSelect = h("select", {id: "fix-intent", "class": "input"}, h("option", {value: "", text: "加载中…"}));
    var kbSearch = h("input", {id: "fix-kb-q", "class": "input", type: "search", maxlength: "50",
                               placeholder: "搜索知识库问题或答案，如：运费险"});
    var kbList = h("ul", {"class": "kb-results", id: "fix-kb-list", role: "listbox", "aria-label": "知识条目"});
    var kbChosen = h("div", {"class": "kb-chosen", id: "fix-kb-chosen", hidden: true});
    var kbBox = h("div", {"class": "answer-pane", dataset: {mode: "kb"}, hidden: true}, kbSearch, kbChosen, kbList);
    var answerText = h("textarea", {id: "fix-answer", "class": "input", rows: "3", maxlength: "2000",
                                    placeholder: "顾客应当得到的正确答案"});
    var questionText = h("input", {id: "fix-question", "class": "input", maxlength: "200",
                                   placeholder: "标准问法（可选），如：退货运费谁承担"});
    var newBox = h("div", {"class": "answer-pane", dataset: {mode: "answer"}, hidden: true}, answerText, questionText);
    var modes = [["none", "不修改答案"], ["kb", "选择知识条目"], ["answer", "填写新答案"]].map(function (m) {
      return h("label", {"class": "radio"},
               h("input", {type: "radio", name: "fix-answer-mode", value: m[0], checked: m[0] === "none",
                           onchange: function () { setMode(m[0]); }}), m[1]);
    });
    var note = h("input", {id: "fix-note", "class": "input", maxlength: "500", placeholder: "可选：给训练 / 知识库维护的人看的说明"});
    var result = h("div", {"class": "form-result", role: "status", hidden: true});
    var submit = h("button", {type: "button", "class": "btn btn-primary btn-sm", id: "fix-submit", text: "记入错题本"});
    var cancel = h("button", {type: "button", "class": "btn btn-sm", id: "fix-cancel", text: "取消"});

    var understood = [intentChip(words) || h("span", {"class": "muted", text: "没有识别出意图"})];
    var body = h("div", {"class": "fix-form"},
      field("顾客原话", h("textarea", {"class": "input", id: "fix-text", rows: "2", readonly: true,
                                      text: words ? words.text : ""}), null, "fix-text"),
      field("机器人理解", h("div", {"class": "understood"}, understood,
        entry.from === "bot" ? h("div", {"class": "bot-said"}, h("span", {"class": "muted", text: "机器人回复："}),
                                 entry.text || (entry.buttons || []).join(" / ")) : null)),
      h("div", {"class": "form-divider", text: "正确的应该是（至少选一项）"}),
      field("正确意图", intentSelect, "意图纠正会在下次“用错题本重新训练”后生效", "fix-intent"),
      field("正确答案", [h("div", {"class": "radios", role: "radiogroup"}, modes), kbBox, newBox],
            "知识纠正在下次重建知识库索引后生效"),
      field("备注", note, null, "fix-note"));
    // the outcome shows in the dialog's foot, next to the buttons: always in sight
    var d = D.dialog({title: "答错了 · 记入错题本", body: body, foot: [result, cancel, submit], "class": "dialog-fix"});
    cancel.addEventListener("click", d.close);

    loadIntents().then(function (intents) {
      var options = [h("option", {value: "", text: "不修改意图"})];
      intents.forEach(function (name) {
        options.push(h("option", {value: name, text: intentLabel(name) + (words && name === words.intent ? " · 机器人识别的" : "")}));
      });
      intentSelect.replaceChildren.apply(intentSelect, options);
    }).catch(function (error) {
      intentSelect.replaceChildren(h("option", {value: "", text: "意图列表加载失败：" + error.message}));
    });

    function setMode(mode) {
      answerMode = mode;
      kbBox.hidden = mode !== "kb";
      newBox.hidden = mode !== "answer";
      if (mode === "kb") { kbSearch.focus(); searchKnowledge(); }
      if (mode === "answer") { answerText.focus(); }
    }

    function choose(item) {
      chosenEntry = item;
      kbChosen.hidden = !item;
      if (item) {
        kbChosen.replaceChildren(h("span", {"class": "muted", text: "已选："}), h("strong", {text: item.question}),
          " ", tag(item.id, "plain"), item.category ? tag(item.category, "info") : null,
          h("button", {type: "button", "class": "btn-link", text: "重新选择", onclick: function () { choose(null); }}));
      }
      kbList.querySelectorAll(".kb-item").forEach(function (el) {
        el.classList.toggle("chosen", !!item && el.dataset.id === item.id);
        el.setAttribute("aria-selected", !!item && el.dataset.id === item.id ? "true" : "false");
      });
    }

    function searchKnowledge() {
      var q = kbSearch.value.trim();
      api("GET", "/api/desk/knowledge?q=" + encodeURIComponent(q)).then(function (res) {
        var items = (res.data.entries || []).map(function (item) {
          return h("li", {"class": "kb-item" + (chosenEntry && chosenEntry.id === item.id ? " chosen" : ""),
                          role: "option", tabindex: "0", dataset: {id: item.id},
                          onclick: function () { choose(item); },
                          onkeydown: function (event) { if (event.key === "Enter") { event.preventDefault(); choose(item); } }},
                   h("span", {"class": "kb-q", text: item.question}),
                   h("span", {"class": "kb-meta muted", text: (item.category ? item.category + " · " : "") + item.id}));
        });
        if (!items.length) { items = [h("li", {"class": "empty", text: q ? "没有匹配的知识条目" : "知识库还没有条目"})]; }
        kbList.replaceChildren.apply(kbList, items);
      }).catch(function (error) {
        kbList.replaceChildren(h("li", {"class": "empty", text: "搜索失败：" + error.message}));
      });
    }

    kbSearch.addEventListener("input", function () {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(searchKnowledge, 250);
    });

    function show(kind, content) {
      result.hidden = false;
      result.className = "form-result form-result-" + kind;
      D.fill(result, content);
    }

    submit.addEventListener("click", function () {
      var payload = {event_id: entry.event_id};
      if (intentSelect.value) { payload.intent = intentSelect.value; }
      if (answerMode === "kb") {
        if (!chosenEntry) { show("error", "请从搜索结果中选择一个知识条目"); return; }
        payload.kb_entry = chosenEntry.id;
      } else if (answerMode === "answer") {
        if (!answerText.value.trim()) { show("error", "请填写正确答案"); answerText.focus(); return; }
        payload.answer = answerText.value.trim();
        if (questionText.value.trim()) { payload.question = questionText.value.trim(); }
      }
      if (!payload.intent && !payload.kb_entry && !payload.answer) {
        show("error", "请选择正确的意图、知识条目，或填写正确答案");
        return;
      }
      if (note.value.trim()) { payload.note = note.value.trim(); }
      submit.disabled = true;
      submit.textContent = "提交中…";
      api("POST", "/api/desk/conversations/" + conversation + "/corrections", payload).then(function (res) {
        var made = res.data;
        var lines = [h("strong", {text: "已记入错题本（#" + made.id + "）"})];
        if (made.right_intent) {
          lines.push(h("div", {text: "意图：" + intentLabel(made.wrong_intent, true) + " → " + intentLabel(made.right_intent)}));
        }
        if (made.kb_correction_id) {
          lines.push(h("div", {text: "知识库纠正 #" + made.kb_correction_id +
                                     (payload.kb_entry ? "：应答 " + chosenEntry.question : "：新答案")}));
        }
        lines.push(h("a", {href: "/desk/corrections", text: "查看错题本"}));
        show("success", lines);
        state.corrected[entry.event_id] = true;
        kbList.hidden = true;
        submit.hidden = true;
        cancel.textContent = "关闭";
        cancel.focus();
        Array.prototype.forEach.call(d.body.querySelectorAll("input, select, textarea"), function (el) { el.disabled = true; });
        if (state.detail && conversation === state.openId) { renderTranscript(state.detail, false); }
      }).catch(function (error) {
        show("error", "未记入：" + error.message);
        submit.disabled = false;
        submit.textContent = "记入错题本";
      });
    });
  }

  // ---- canned replies --------------------------------------------------------------------------
  var cannedTimer = null;

  function fillVariables(text) {
    var d = state.detail || {};
    var customer = d.customer && d.customer !== d.conversation_id ? d.customer : "亲";
    return text.replace(/\{customer\}/g, customer).replace(/\{agent\}/g, CFG.display_name || CFG.username)
      .replace(/\{shop\}/g, CFG.shop || "本店");
  }

  function insertReply(text) {
    var box = $("reply-text");
    var start = box.selectionStart || box.value.length;
    var end = box.selectionEnd || box.value.length;
    box.value = box.value.slice(0, start) + text + box.value.slice(end);
    box.focus();
    box.selectionStart = box.selectionEnd = start + text.length;
    updateCount();
  }

  function loadCanned() {
    var q = $("canned-q").value.trim();
    api("GET", "/api/desk/canned?q=" + encodeURIComponent(q)).then(function (result) {
      var items = (result.data.canned || []).map(function (c) {
        return h("li", {"class": "canned-item", tabindex: "0", title: "点击插入", onclick: function () {
          insertReply(fillVariables(c.text));
          toggleCanned(false);
        }}, h("strong", {text: c.title}), h("span", {"class": "muted", text: fillVariables(c.text)}));
      });
      if (!items.length) { items = [h("li", {"class": "empty", text: q ? "没有匹配的快捷回复" : "还没有快捷回复"})]; }
      $("canned-list").replaceChildren.apply($("canned-list"), items);
    }).catch(failed);
  }

  function toggleCanned(open) {
    $("canned-panel").hidden = !open;
    $("canned-btn").setAttribute("aria-expanded", open ? "true" : "false");
    if (open) { $("canned-q").focus(); loadCanned(); }
  }

  // ---- tabs ------------------------------------------------------------------------------------
  function setTab(tab) {
    state.tab = tab;
    document.querySelectorAll(".tab").forEach(function (el) {
      var active = el.dataset.tab === tab;
      el.classList.toggle("active", active);
      el.setAttribute("aria-selected", active ? "true" : "false");
    });
    $("filter-bar").hidden = tab !== "all";
    loadList();
  }

  // ---- live updates ----------------------------------------------------------------------------
  // live events come in bursts (and to every open page at once): the list is reloaded at most
  // once per LIST_EVERY_MS, and only for events that change lists; the open conversation at once
  var LIST_EVERY_MS = 1000;
  // desk steps that change what the queue lists show (replies, notes, deliveries and corrections
  // only change the open conversation)
  var LIST_KINDS = ["queued", "cancelled", "claimed", "assigned", "transferred", "handed_back", "closed",
                    "snoozed", "reverted", "reprioritised", "sla_breach"];
  var refreshTimer = null;
  var refreshList = false;
  var refreshDetail = false;
  var listLoadedAt = 0;

  function scheduleRefresh(detailToo, listToo) {
    refreshDetail = refreshDetail || detailToo;
    refreshList = refreshList || listToo;
    if (refreshTimer) { return; }
    var wait = refreshList ? Math.max(100, LIST_EVERY_MS - (performance.now() - listLoadedAt)) : 100;
    refreshTimer = setTimeout(function () {
      refreshTimer = null;
      var detail = refreshDetail, list = refreshList;
      refreshDetail = refreshList = false;
      if (list) { listLoadedAt = performance.now(); loadList(); }
      if (detail && state.openId) { loadDetail(); }
    }, wait);
  }

  // common.js has already announced it (sound and pop-up); here the lists follow
  function onDesk(event) {
    var concerned = event.conversation === state.openId;
    scheduleRefresh(concerned, LIST_KINDS.indexOf(event.kind) >= 0);
    if (concerned && (event.kind === "claimed" || event.kind === "assigned" || event.kind === "transferred")) {
      loadContext();
    }
    if (event.kind === "sla_breach") {
      // flagged to supervisors until the conversation is handled (the list's sla keeps it after a reload)
      state.breaches[event.conversation] = event.text || "超时";
    } else if (event.kind === "handed_back" || event.kind === "closed" || event.kind === "cancelled") {
      delete state.breaches[event.conversation];
    }
  }

  function onMessage(event) {
    var concerned = event.conversation === state.openId;
    if (!concerned && event.assignee === CFG.username) {
      state.unread[event.conversation] = true;
      toast("顾客 " + visitorLabel(event.customer || "") + "：" + (event.text || ""), "info",
            function () { D.open(event.conversation, "mine"); });
    }
    // a customer message changes a list only by the unread mark of one of mine
    scheduleRefresh(concerned, !concerned && event.assignee === CFG.username);
  }

  // ---- the clock: waits and the reply window ---------------------------------------------------
  function tick() {
    var elapsed = (performance.now() - state.listAt) / 1000;
    document.querySelectorAll(".wait[data-base]").forEach(function (el) {
      var seconds = Number(el.dataset.base) + elapsed;
      var sla = el.dataset.sla;
      el.textContent = duration(seconds);
      if (sla) {  // the service targets decide (business minutes, from the server)
        el.classList.toggle("warn", sla === "warning");
        el.classList.toggle("alert", sla === "missed");
      } else {
        el.classList.toggle("warn", seconds >= WAIT_WARN_S && seconds < WAIT_ALERT_S);
        el.classList.toggle("alert", seconds >= WAIT_ALERT_S);
      }
    });
    if (state.detail) { renderWindow(); }
  }

  // ---- wiring ----------------------------------------------------------------------------------
  function init() {
    document.querySelectorAll(".tab").forEach(function (el) {
      el.addEventListener("click", function () { setTab(el.dataset.tab); });
    });
    $("state-filter").addEventListener("change", function () { state.filter = this.value; loadList(); });
    $("btn-claim").addEventListener("click", function () { if (state.openId) { claim(state.openId); } });
    $("btn-handback").addEventListener("click", function () {
      act("handback", undefined, function () { toast("已交还机器人接待", "success"); });
    });
    $("btn-end").addEventListener("click", function () {
      act("end", undefined, function () { toast("会话已结束", "success"); });
    });
    $("btn-snooze").addEventListener("click", function () {
      act("snooze", {minutes: SNOOZE_MINUTES}, function () { toast("已设为稍后处理（" + SNOOZE_MINUTES + " 分钟）", "info"); });
    });
    $("assign-select").addEventListener("focus", loadStaff);
    $("btn-assign").addEventListener("click", function () {
      var to = $("assign-select").value;
      if (!to) { toast("请先选择要转给的客服", "error"); return; }
      act("assign", {to: to}, function () { toast("已转给 " + staffName(to), "success"); });
    });
    $("btn-send").addEventListener("click", sendReply);
    $("reply-text").addEventListener("input", updateCount);
    $("reply-text").addEventListener("keydown", function (event) {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); sendReply(); }
    });
    $("btn-note").addEventListener("click", addNote);
    document.querySelectorAll(".ctab").forEach(function (el) {
      el.addEventListener("click", function () {
        document.querySelectorAll(".ctab").forEach(function (t) { t.classList.toggle("active", t === el); });
        document.querySelectorAll(".composer-pane").forEach(function (p) {
          p.hidden = p.dataset.pane !== el.dataset.pane;
        });
      });
    });
    $("canned-btn").addEventListener("click", function () { toggleCanned($("canned-panel").hidden); });
    $("canned-q").addEventListener("input", function () {
      clearTimeout(cannedTimer);
      cannedTimer = setTimeout(loadCanned, 200);
    });
    $("canned-q").addEventListener("keydown", function (event) { if (event.key === "Escape") { toggleCanned(false); } });
    document.addEventListener("click", function (event) {
      if (!$("canned-panel").hidden && !event.target.closest(".canned-wrap")) { toggleCanned(false); }
    });
    // a pop-up (common.js) or another page opens a conversation here, in the right tab
    D.open = function (id, tab) {
      if (tab && tab !== state.tab) { setTab(tab); }
      openConversation(id);
    };
    var startTab = /[?&]tab=(queued|mine|all)\b/.exec(window.location.search);
    if (startTab) {
      history.replaceState(null, "", window.location.pathname + window.location.hash);
      setTab(startTab[1]);
    } else {
      loadList();
    }
    loadStaff().then(function () {
      var match = /^#c=(\d+)$/.exec(window.location.hash);
      if (match) { openConversation(Number(match[1])); }
    });
    D.live({desk: onDesk, message: onMessage, reconnected: function () { scheduleRefresh(true, true); }});
    setInterval(tick, 1000);
    setInterval(loadList, 30000);  // a safety net besides the live stream
  }

  init();
}());
