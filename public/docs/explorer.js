// The API explorer: Swagger UI (npm swagger-ui-dist, copied into ./vendor by
// devstack/copy_assets.mjs) on the Worker's own /openapi.json. Every route can be sent
// from here ("Try it out", then "Execute"); requests go to this same origin.
window.explorer = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#explorer",
  deepLinking: true,
  displayRequestDuration: true,
  defaultModelsExpandDepth: 0,
  tryItOutEnabled: false,
});
