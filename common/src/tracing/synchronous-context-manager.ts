/**
 * OpenTelemetry's context manager for a process whose spans pass their parents
 * explicitly: `context.with(ctx, fn)` makes `ctx` the active context while `fn` runs
 * synchronously, and no longer. Nothing follows a context across an `await`, so nothing
 * hooks the process's promises (the SDK's default, AsyncLocalStorage, does, for every
 * promise of every request). What still asks for the active context gets what it needs:
 * the span processors' exports mark their own HTTP calls as not traced within one
 * synchronous call.
 */
import { ROOT_CONTEXT, type Context, type ContextManager } from "@opentelemetry/api";

export class SynchronousContextManager implements ContextManager {
  private current: Context = ROOT_CONTEXT;

  active(): Context {
    return this.current;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    context: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    const outer = this.current;
    this.current = context;
    try {
      return fn.call(thisArg, ...args);
    } finally {
      this.current = outer;
    }
  }

  /** Binds nothing: a callback runs later, in whatever context is active then. */
  bind<T>(_context: Context, target: T): T {
    return target;
  }

  enable(): this {
    return this;
  }

  disable(): this {
    this.current = ROOT_CONTEXT;
    return this;
  }
}
