// A TypeScript application calling the service through types generated from its /docs.json
// (src/api.d.ts, written by `npm run generate`; make ts-client). The compiler checks every
// request and answer against the document: a field the service does not have fails `tsc`.
//
//   node dist/example.js http://127.0.0.1:3000
import createClient from "openapi-fetch";

import type { components, paths } from "./api.js";

type Encoded = components["schemas"]["EncodeResponse"];
type ServiceError = components["schemas"]["ErrorResponse"];

const baseUrl = process.argv[2] ?? "http://127.0.0.1:3000";
const vae = createClient<paths>({ baseUrl });

function fail(what: string, error: unknown): never {
  console.error(`${what}: ${JSON.stringify(error)}`);
  process.exit(1);
}

// the served model's shape, then one image of it drawn from the prior
const model = await vae.POST("/model", { body: {} });
if (!model.data) fail("model", model.error);
const [c, h, w] = model.data.input.shape;

const sample = await vae.POST("/sample", { body: { n: 2, seed: 0, output_format: "json" } });
if (!sample.data) fail("sample", sample.error);
const images = sample.data.outputs;
if (!Array.isArray(images)) fail("sample", "outputs are not a JSON array");

const encoded = await vae.POST("/encode", { body: { inputs: images, samples: 3, seed: 1 } });
if (!encoded.data) fail("encode", encoded.error);
const posterior: Encoded = encoded.data;

const score = await vae.POST("/score", { body: { inputs: images, k: 8, seed: 0 } });
if (!score.data) fail("score", score.error);

// a request past a limit: the typed error body names the field and the setting
const refused = await vae.POST("/sample", { body: { n: 100000 } });
const error: ServiceError | undefined = refused.error;

console.log(JSON.stringify({
  model: model.data.name,
  shape: [c, h, w],
  latent_dim: model.data.latent_dim,
  mu_shape: [posterior.mu.length, posterior.mu[0]?.length],
  z_shape: [posterior.z?.length, posterior.z?.[0]?.length, posterior.z?.[0]?.[0]?.length],
  neg_elbo: score.data.neg_elbo,
  percentile: score.data.percentile,
  refused_status: refused.response.status,
  refused_error: error?.error,
}));
