import { handleCallbackFailure, QSTASH_CALLBACK_FAILED_PATH } from "../lib/cluster/qstash.ts";
import { callbackReportRoute } from "./qstash-inbox.ts";

export default callbackReportRoute(
  {
    path: QSTASH_CALLBACK_FAILED_PATH,
    operationId: "qstashCallbackFailed",
    summary: "QStash reports a callback it gave up on (cluster mode); signed with Upstash-Signature",
  },
  (qstash, report) => handleCallbackFailure(qstash.jobs, report, { onAttempt: qstash.onCallbackAttempt }),
);
