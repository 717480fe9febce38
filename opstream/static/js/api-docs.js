// The /docs page: Swagger UI over this server's /openapi.json (relative, so a mount path
// is kept). A file, not an inline script, so a Content-Security-Policy can stay strict.
window.ui = SwaggerUIBundle({
  url: "openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  // The default asks an online validator for a badge: these hosts reach no internet.
  validatorUrl: null,
});
