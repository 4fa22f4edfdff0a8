import { Hono } from "hono";
import type { AppEnv } from "./env.ts";

/**
 * A self-contained API page: it renders /openapi.json in the browser without loading anything from
 * another origin, so it works on machines with no internet.
 */
const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>slotscribe API</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}
.op{border:1px solid #ddd;border-radius:6px;margin:.8rem 0;padding:.6rem 1rem}.m{font-weight:700;text-transform:uppercase;margin-right:.6rem}
pre{background:#f6f6f6;padding:.6rem;overflow:auto;font-size:13px}</style></head>
<body><h1>slotscribe API</h1><p>Machine-readable: <a href="/openapi.json">/openapi.json</a></p><div id="ops">Loading…</div>
<script>
fetch('/openapi.json').then(r=>r.json()).then(doc=>{
  const ops=document.getElementById('ops'); ops.textContent='';
  for(const [path,item] of Object.entries(doc.paths)) for(const [method,op] of Object.entries(item)){
    const d=document.createElement('details'); d.className='op';
    const s=document.createElement('summary'); s.innerHTML='<span class="m"></span><code></code> — <span></span>';
    s.children[0].textContent=method; s.children[1].textContent=path; s.children[2].textContent=op.summary||'';
    const pre=document.createElement('pre'); pre.textContent=JSON.stringify({requestBody:op.requestBody,responses:op.responses},null,2);
    d.append(s,pre); ops.append(d);
  }
});
</script></body></html>`;

export default new Hono<AppEnv>().get("/docs", (c) => c.html(PAGE));
