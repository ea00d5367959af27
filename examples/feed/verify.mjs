// The app's pool handler (`handler: './verify.mjs'` in app.mjs): it runs in wsdrain's worker
// threads, so the signature check never holds up a worker's event loop. An HMAC is cheap; the
// same place suits the costly ones (RSA or ECDSA JWT verification, password hashing).
import { verify } from './token.mjs';

export default function handle({ data }) {
  return JSON.stringify(verify(data));
}
