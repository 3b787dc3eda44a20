/**
 * Server URLs as they may be printed: credentials a URL carries are masked — a password
 * (`scheme://user:pass@host`), and a user part standing alone, which for NATS is a token
 * (`nats://TOKEN@host`).
 */
export function redactedUrl(serverUrl: string): string {
  try {
    const url = new URL(serverUrl);
    if (url.password) url.password = "***";
    else if (url.username) url.username = "***";
    return url.toString();
  } catch {
    return serverUrl.replace(/\/\/([^@/:]*)(:[^@/]*)?@/, (_, user: string, password?: string) =>
      password ? `//${user}:***@` : "//***@",
    );
  }
}
