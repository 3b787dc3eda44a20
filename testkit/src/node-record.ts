/**
 * A cloud worker's node record, as tests heartbeat it into the cluster's nodes bucket.
 * Written out here rather than imported: testkit does not depend on @tandem/cluster, whose
 * NodeRecord (less `heartbeatAt`) this type must stay assignable to — the tests that pass
 * it to NodeRegistry.heartbeat type-check that.
 */
export interface TestNodeRecord {
  id: string;
  role: "cloud-worker";
  endpoint: string;
  weight: number;
  expertSlots: number;
  load: { sessions: number; kvBytes: number; expertMapVersion?: number };
  draining: boolean;
}

/**
 * The record of an idle, alive cloud worker `id` (e.g. "w1"), with `overrides`. Its
 * endpoint's port is 5000 + the number the id ends in, so each worker's is its own.
 */
export function nodeRecord(id: string, overrides: Partial<TestNodeRecord> = {}): TestNodeRecord {
  const number = Number(/\d+$/.exec(id)?.[0] ?? 0);
  return {
    id,
    role: "cloud-worker",
    endpoint: `127.0.0.1:${5000 + number}`,
    weight: 1,
    expertSlots: 0,
    load: { sessions: 0, kvBytes: 0 },
    draining: false,
    ...overrides,
  };
}
