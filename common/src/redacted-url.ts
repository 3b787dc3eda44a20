/** Server URLs as they may be printed: a password a URL carries (`scheme://user:pass@host`) is masked. */
export function redactedUrl(serverUrl: string): string {
  try {
    const url = new URL(serverUrl);
    if (url.password) url.password = "***";
    return url.toString();
  } catch {
    return serverUrl.replace(/:[^:@/]*@/, ":***@");
  }
}
