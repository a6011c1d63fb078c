// Starts Swagger UI on /api/docs (templates/swagger-ui.html): from a file, not an inline
// script, so the page works under the portal's Content-Security-Policy.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.spec,
    dom_id: "#swagger-ui",
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset.slice(1)],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    displayOperationId: false,
    displayRequestDuration: false,
    docExpansion: "none",
  });
});
