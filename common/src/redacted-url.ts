/**
 * Server URLs as they may be printed: credentials a URL carries are masked — a password
 * (`scheme://user:pass@host`), and for NATS a user part standing alone, which there is a
 * token (`nats://TOKEN@host`). A user name alone elsewhere (Redis's ACL user, whose
 * password comes from a file) is no secret and stays, so the operator can tell which.
 */
export function redactedUrl(serverUrl: string): string {
  const natsToken = /^(nats|tls|wss?):/i.test(serverUrl);
  try {
    const url = new URL(serverUrl);
    if (url.password) url.password = "***";
    else if (url.username && natsToken) url.username = "***";
    return url.toString();
  } catch {
    return serverUrl.replace(/\/\/([^@/:]*)(:[^@/]*)?@/, (whole, user: string, password?: string) =>
      password ? `//${user}:***@` : natsToken ? "//***@" : whole,
    );
  }
}
