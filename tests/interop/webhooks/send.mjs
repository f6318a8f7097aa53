// Sends one action to grantbridge's push endpoint, signed by the official
// Standard Webhooks library (npm `standardwebhooks`), as a control plane would.
//
//   node send.mjs URL SECRET MSG_ID BODY [--tamper] [--stale] [--also-sign-with OTHER]
//
// Prints one JSON line: {"status": HTTP status, "body": the answer}.
import { Webhook } from "standardwebhooks";

const [url, secret, msgId, payload, ...flags] = process.argv.slice(2);
const stale = flags.includes("--stale");
const tamper = flags.includes("--tamper");
const other = flags.includes("--also-sign-with") ? flags[flags.indexOf("--also-sign-with") + 1] : null;

const when = new Date(Date.now() - (stale ? 10 * 60 * 1000 : 0));
let signature = new Webhook(secret).sign(msgId, when, payload);
if (other) {
  signature = `${new Webhook(other).sign(msgId, when, payload)} ${signature}`;
}
const body = tamper ? payload.replace("revoke-access", "grant-access") : payload;
const answer = await fetch(url, {
  method: "POST",
  body,
  headers: {
    "content-type": "application/json",
    "webhook-id": msgId,
    "webhook-timestamp": String(Math.floor(when.getTime() / 1000)),
    "webhook-signature": signature,
  },
});
const text = await answer.text();
console.log(JSON.stringify({ status: answer.status, body: text ? JSON.parse(text) : null }));
