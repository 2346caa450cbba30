/* 关键词自动回复：规则列表（GET /api/sop/keywords），新建 / 编辑（对话框：适用群标签、关键词、回复、
 * 冷却时间、启用；POST /api/sop/keywords、PUT /api/sop/keywords/{id}），启用 / 停用与删除。 */
(function () {
  "use strict";

  var D = window.SiyuDesk;
  var S = window.SiyuSop;
  var $ = D.$, h = D.h, api = D.api, toast = D.toast;
  var DEFAULT_COOLDOWN = 300;

  var state = {replies: [], tags: [], seq: 0};

  function tagLabel(tag) { return tag ? "标签「" + tag + "」" : "全部群"; }

  function cooldownText(seconds) {
    seconds = Number(seconds) || 0;
    if (!seconds) { return "不限"; }
    if (seconds % 3600 === 0) { return seconds / 3600 + " 小时"; }
    if (seconds % 60 === 0) { return seconds / 60 + " 分钟"; }
    return seconds + " 秒";
  }

  function load() {
    var seq = ++state.seq;
    return api("GET", "/api/sop/keywords").then(function (result) {
      if (seq !== state.seq) { return; }
      state.replies = result.data.replies || [];
      render();
    }).catch(function (error) {
      if (seq !== state.seq) { return; }
      D.fill($("keywords-body"), S.emptyRow(6, "加载失败：" + error.message));
    });
  }

  function fillTagFilter() {
    var select = $("keywords-tag");
    var current = select.value;
    D.fill(select, [h("option", {value: "*", text: "全部规则"}), h("option", {value: "", text: "适用全部群的"})].concat(
      state.tags.map(function (t) { return h("option", {value: t, text: "标签「" + t + "」"}); })));
    select.value = current;
    if (select.value !== current) { select.value = "*"; }
  }

  function body(reply, changes) {
    return Object.assign({group_tag: reply.group_tag || "", keyword: reply.keyword, reply: reply.reply,
                          cooldown_s: reply.cooldown_s, active: reply.active}, changes || {});
  }

  function toggle(reply, button) {
    button.disabled = true;
    api("PUT", "/api/sop/keywords/" + reply.id, body(reply, {active: !reply.active})).then(function () {
      toast(reply.active ? "已停用「" + reply.keyword + "」" : "已启用「" + reply.keyword + "」", "success");
      return load();
    }).catch(function (error) { button.disabled = false; D.failed(error); });
  }

  function remove(reply) {
    D.confirm("删除自动回复", "删除关键词「" + reply.keyword + "」的自动回复吗？", "删除", true).then(function (ok) {
      if (!ok) { return; }
      api("DELETE", "/api/sop/keywords/" + reply.id).then(function () {
        toast("已删除「" + reply.keyword + "」", "success");
        return load();
      }).catch(D.failed);
    });
  }

  function row(reply) {
    var toggleBtn = h("button", {type: "button", "class": "btn btn-xs keyword-toggle", text: reply.active ? "停用" : "启用"});
    toggleBtn.addEventListener("click", function () { toggle(reply, toggleBtn); });
    return h("tr", {"class": "keyword-row", dataset: {id: reply.id, active: reply.active ? "true" : "false"}},
      h("td", {}, h("strong", {"class": "keyword", text: reply.keyword})),
      h("td", {}, reply.group_tag ? D.tag(reply.group_tag, "plain") : h("span", {"class": "muted", text: "全部群"})),
      h("td", {"class": "keyword-reply"}, h("div", {"class": "said", text: reply.reply})),
      h("td", {"class": "nowrap", text: cooldownText(reply.cooldown_s)}),
      h("td", {}, reply.active ? D.tag("启用", "success") : D.tag("已停用", "info")),
      h("td", {"class": "col-actions"},
        h("button", {type: "button", "class": "btn btn-xs keyword-edit", text: "编辑", onclick: function () { edit(reply); }}),
        toggleBtn,
        h("button", {type: "button", "class": "btn btn-xs btn-danger-plain keyword-delete", text: "删除",
                     onclick: function () { remove(reply); }})));
  }

  function render() {
    var tag = $("keywords-tag").value;
    var q = $("keywords-q").value.trim().toLowerCase();
    var shown = state.replies.filter(function (r) {
      if (tag !== "*" && (r.group_tag || "") !== tag) { return false; }
      return !q || [r.keyword, r.reply].some(function (v) { return v && v.toLowerCase().indexOf(q) >= 0; });
    });
    $("keywords-count").textContent = state.replies.length;
    var rows = shown.map(row);
    if (!rows.length) {
      rows = [S.emptyRow(6, state.replies.length ? "没有符合筛选条件的规则" : "还没有自动回复：点击“新建回复”添加")];
    }
    D.fill($("keywords-body"), rows);
  }

  // ---- the dialog ------------------------------------------------------------------------------
  function field(label, control, hint, id) {
    return h("div", {"class": "form-row"}, h("label", {"class": "form-label", "for": id, text: label}),
             h("div", {"class": "form-control"}, control, hint ? h("div", {"class": "form-hint", text: hint}) : null));
  }

  function edit(reply) {
    var isNew = !reply;
    reply = reply || {group_tag: "", keyword: "", reply: "", cooldown_s: DEFAULT_COOLDOWN, active: true};
    var tags = state.tags.slice();
    if (reply.group_tag && tags.indexOf(reply.group_tag) < 0) { tags.push(reply.group_tag); }
    var tagSelect = h("select", {"class": "input", id: "keyword-tag"},
      h("option", {value: "", text: "全部群"}), tags.map(function (t) { return h("option", {value: t, text: "标签「" + t + "」的群"}); }));
    tagSelect.value = reply.group_tag || "";
    var keyword = h("input", {"class": "input", id: "keyword-word", maxlength: "32", placeholder: "例如：发货", autofocus: true});
    keyword.value = reply.keyword || "";
    var text = h("textarea", {"class": "input", id: "keyword-reply", rows: "4", maxlength: "1000",
                              placeholder: "例如：下单后 48 小时内发货，物流信息可以在小程序“我的订单”里查看～"});
    text.value = reply.reply || "";
    var cooldown = h("input", {"class": "input input-num", id: "keyword-cooldown", type: "number", min: "30", max: "604800", step: "1"});
    cooldown.value = reply.cooldown_s !== undefined && reply.cooldown_s !== null ? reply.cooldown_s : DEFAULT_COOLDOWN;
    var active = h("input", {type: "checkbox", id: "keyword-active"});
    active.checked = reply.active !== false;
    var error = h("p", {"class": "form-error", role: "alert", hidden: true});
    var save = h("button", {type: "button", "class": "btn btn-sm btn-primary", id: "keyword-save", text: "保存"});
    var cancel = h("button", {type: "button", "class": "btn btn-sm", text: "取消"});
    var dlg = D.dialog({title: isNew ? "新建自动回复" : "编辑自动回复", wide: true, body: [
      field("适用群", tagSelect, "只在带该标签的群里回复；“全部群”对所有有机器人的群生效。", "keyword-tag"),
      field("关键词", keyword, "群消息包含这个词时回复（最多 32 个字）。", "keyword-word"),
      field("回复内容", text, "", "keyword-reply"),
      field("冷却时间", h("span", {"class": "inline"}, cooldown, h("span", {"class": "muted", text: " 秒"})),
            "同一个群里，这条规则回复后在冷却时间内不再回复（30 秒至 7 天）。", "keyword-cooldown"),
      h("div", {"class": "form-row"}, h("span", {"class": "form-label"}),
        h("div", {"class": "form-control"}, h("label", {"class": "check"}, active, " 启用"))),
      error], foot: [cancel, save]});
    cancel.addEventListener("click", dlg.close);
    save.addEventListener("click", function () {
      var data = {group_tag: tagSelect.value, keyword: keyword.value.trim(), reply: text.value.trim(),
                  cooldown_s: parseInt(cooldown.value, 10), active: active.checked};
      var problem = !data.keyword ? "请填写关键词" : !data.reply ? "请填写回复内容" :
        !(data.cooldown_s >= 30 && data.cooldown_s <= 604800) ? "冷却时间需要 30 秒至 7 天（604800 秒）" : "";
      if (problem) { error.textContent = problem; error.hidden = false; return; }
      save.disabled = true;
      (isNew ? api("POST", "/api/sop/keywords", data) : api("PUT", "/api/sop/keywords/" + reply.id, data)).then(function () {
        toast(isNew ? "已添加「" + data.keyword + "」" : "已保存「" + data.keyword + "」", "success");
        dlg.close();
        load();
      }).catch(function (e) {
        save.disabled = false;
        if (e.status !== 401) { error.textContent = e.message; error.hidden = false; }
      });
    });
  }

  function init() {
    $("new-keyword").addEventListener("click", function () { edit(null); });
    $("keywords-tag").addEventListener("change", render);
    $("keywords-q").addEventListener("input", render);
    S.loadGroups().then(function (g) { state.tags = g.tags; fillTagFilter(); }).catch(function () { /* tags typed by hand later */ });
    load();
  }

  init();
}());
