// One deployment's state while a run works on it: every change is written at once (atomically, by the
// store), and replicas deployed in parallel change their own part through the same holder, so no update
// is lost between them.
import type { StateStore } from "../adapters/state-store.js";
import { addEvent, type DeploymentState, type HistoryEvent, type ReplicaState } from "../core/state.js";

export class StateHolder {
  constructor(
    private state: DeploymentState,
    private readonly store: StateStore,
    private readonly now: () => Date,
  ) {}

  get(): DeploymentState {
    return this.state;
  }

  set(next: DeploymentState): DeploymentState {
    this.state = next;
    this.store.write(next);
    return next;
  }

  update(fn: (s: DeploymentState) => DeploymentState): DeploymentState {
    return this.set(fn(this.state));
  }

  replica(i: number): ReplicaState {
    const r = this.state.replicas.find((x) => x.replica === i);
    if (!r) throw new Error(`${this.state.name} has no replica ${i}`);
    return r;
  }

  updateReplica(i: number, fn: (r: ReplicaState) => ReplicaState): ReplicaState {
    this.set({ ...this.state, replicas: this.state.replicas.map((r) => (r.replica === i ? fn(r) : r)) });
    return this.replica(i);
  }

  event(e: Omit<HistoryEvent, "at">): void {
    this.set(addEvent(this.state, e, this.now()));
  }
}
