// The console's API client: every call is an RPC request signed here, in
// the browser, with the AccessKey the user signed in with (signature V1,
// HMAC-SHA1 through WebCrypto), exactly as the official SDKs sign it. The
// gateway cannot tell the console from any other client.

export const NAS = "2017-06-26";
export const BSS = "2017-12-14";

/** An error reply: the API's code and message, shown as they are. */
export class ApiError extends Error {
  constructor(code, message, status, requestId) {
    super(message || code);
    this.code = code;
    this.status = status;
    this.requestId = requestId;
  }
}

// RFC 3986 percent-encoding, as the signature's canonical form wants it.
function pct(s) {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
}

function timestamp() {
  return new Date().toISOString().replace(/\.\d{3}Z$/, "Z");
}

function flatten(params) {
  const out = {};
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    out[k] = String(v);
  }
  return out;
}

export class Api {
  constructor({ keyId, secret, region }) {
    if (!globalThis.crypto || !crypto.subtle) {
      throw new ApiError("InsecureContext",
        "The console signs requests with WebCrypto, which the browser offers only over HTTPS " +
        "or on localhost: open it through the HTTPS listener.");
    }
    this.keyId = keyId;
    this.region = region;
    this.key = crypto.subtle.importKey("raw", new TextEncoder().encode(secret + "&"),
      { name: "HMAC", hash: "SHA-1" }, false, ["sign"]);
  }

  async sign(params) {
    const canonical = Object.keys(params).sort()
      .map((k) => `${pct(k)}=${pct(params[k])}`).join("&");
    const toSign = `POST&${pct("/")}&${pct(canonical)}`;
    const mac = await crypto.subtle.sign("HMAC", await this.key, new TextEncoder().encode(toSign));
    return btoa(String.fromCharCode(...new Uint8Array(mac)));
  }

  /** Calls `action` of API `version`; the reply's fields, or an ApiError. */
  async call(action, params = {}, version = NAS) {
    const p = {
      ...flatten(params),
      Action: action,
      Version: version,
      Format: "JSON",
      AccessKeyId: this.keyId,
      SignatureMethod: "HMAC-SHA1",
      SignatureVersion: "1.0",
      SignatureNonce: crypto.randomUUID(),
      Timestamp: timestamp(),
      RegionId: this.region,
    };
    p.Signature = await this.sign(p);
    const body = Object.entries(p).map(([k, v]) => `${pct(k)}=${pct(v)}`).join("&");
    let res;
    try {
      res = await fetch("/", {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body,
        credentials: "omit",
        cache: "no-store",
      });
    } catch (e) {
      throw new ApiError("NetworkError", `The service could not be reached: ${e.message}`, 0);
    }
    let reply = {};
    try {
      reply = await res.json();
    } catch {
      throw new ApiError("InvalidReply", `HTTP ${res.status} without a JSON body`, res.status);
    }
    // NAS errors carry Code; BssOpenApi replies carry Success (and Code on
    // success too).
    const failed = !res.ok || (version === BSS ? reply.Success === false : reply.Code !== undefined);
    if (failed) {
      throw new ApiError(reply.Code || `HTTP${res.status}`, reply.Message, res.status, reply.RequestId);
    }
    return reply;
  }
}

/** Every page of a paged NAS list (`outer.inner` of each reply, or `outer`). */
export async function all(api, action, params, outer, inner, pageSize = 100) {
  const items = [];
  for (let page = 1; page < 1000; page++) {
    const r = await api.call(action, { ...params, PageNumber: page, PageSize: pageSize });
    const got = (inner ? r[outer] && r[outer][inner] : r[outer]) || [];
    items.push(...got);
    if (got.length < pageSize || items.length >= (r.TotalCount ?? items.length)) break;
  }
  return items;
}
