// The API page's Swagger UI, as BentoML starts it, with the online validator badge off (it would send
// the address of this service's API description to validator.swagger.io), drawn from /api-docs.json:
// /docs.json without BentoML's default description, whose badges are images from other sites.
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "./api-docs.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout",
  });
};
