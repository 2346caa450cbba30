/* 登录页：用 fetch 调 /api/login，成功后跳到 next（仅限本站路径）或工作台。 */
(function () {
  "use strict";
  var form = document.getElementById("login-form");
  var errorBox = document.getElementById("login-error");
  var submit = document.getElementById("login-submit");

  function safeNext(target) {
    if (!target || target.charAt(0) !== "/" || target.charAt(1) === "/" || target.indexOf("\\") >= 0) {
      return "/desk/";
    }
    return target;
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var username = form.username.value.trim();
    var password = form.password.value;
    if (!username || !password) {
      showError("请输入用户名和密码");
      return;
    }
    errorBox.hidden = true;
    submit.disabled = true;
    submit.textContent = "登录中…";
    fetch("/api/login", {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: JSON.stringify({username: username, password: password})
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (response.ok) {
          window.location.assign(safeNext(form.getAttribute("data-next")));
          return;
        }
        showError(body.error || ("登录失败（" + response.status + "）"));
        submit.disabled = false;
        submit.textContent = "登录";
        form.password.select();
      });
    }).catch(function () {
      showError("无法连接服务器，请检查网络后重试");
      submit.disabled = false;
      submit.textContent = "登录";
    });
  });
}());
