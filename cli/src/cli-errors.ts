/** A command line that cannot be run as given; the message names the option. */
export class CliUsageError extends Error {
  readonly option: string;
  constructor(option: string, message: string) {
    super(`${option}: ${message}`);
    this.name = "CliUsageError";
    this.option = option;
  }
}
