// cli-progress options the tuner's bar uses beyond search/cli-progress.d.ts's declaration.
import "cli-progress";

declare module "cli-progress" {
  interface Options {
    /** Milliseconds between lines when the stream is not a TTY (with noTTYOutput). */
    notTTYSchedule?: number;
  }
}
