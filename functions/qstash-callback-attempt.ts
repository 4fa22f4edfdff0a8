import { handleCallbackAttempt, QSTASH_CALLBACK_ATTEMPT_PATH } from "../lib/cluster/qstash.ts";
import { callbackReportRoute } from "./qstash-inbox.ts";

export default callbackReportRoute(
  {
    path: QSTASH_CALLBACK_ATTEMPT_PATH,
    operationId: "qstashCallbackAttempt",
    summary: "QStash reports a callback receiver's answer (cluster mode); signed with Upstash-Signature",
  },
  (qstash, report) => handleCallbackAttempt(qstash.jobs, report, { cancel: qstash.cancelMessage, onAttempt: qstash.onCallbackAttempt }),
);
