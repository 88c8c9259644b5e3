/**
 * A cluster source holding objects in memory: `start` hands over the initial ones, `apply`
 * stands for watch events. For tests and benchmarks that drive the operator without an API.
 */
import type { Parsed } from '../../src/k8s/parse.js';
import type { ClusterSource, SourceSink } from '../../src/k8s/source.js';

export class MemorySource implements ClusterSource {
  private sink: SourceSink | undefined;

  constructor(private readonly initial: Parsed[]) {}

  async start(sink: SourceSink): Promise<void> {
    this.sink = sink;
    for (const p of this.initial) sink.upsert(p);
  }

  async stop(): Promise<void> {
    this.sink = undefined;
  }

  apply(...ps: Parsed[]): void {
    if (!this.sink) throw new Error('the source is not running');
    for (const p of ps) this.sink.upsert(p);
  }
}
