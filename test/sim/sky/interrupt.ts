// Ctrl-C (and SIGTERM) in the client. While a request's log is being streamed the signal only marks
// the stream as interrupted (the request goes on, _async_call_or_wait prints how to follow it);
// anywhere else it aborts like click's main does: "Aborted!" and exit 1.
let streaming = false;
let interrupted = false;

export function beginStreaming(): void {
  streaming = true;
  interrupted = false;
}

export function endStreaming(): void {
  streaming = false;
}

export function wasInterrupted(): boolean {
  return interrupted;
}

export function installSignalHandlers(onAbort: () => void): void {
  const handler = () => {
    if (streaming) interrupted = true;
    else onAbort();
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
}
