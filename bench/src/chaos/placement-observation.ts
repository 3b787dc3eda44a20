/** What a watcher of the shard map saw during a chaos run, and how many maps were written. */
import type { ShardMapRecord } from "@tandem/cluster";

/** A placement map as an observer saw it arrive. */
export interface ObservedMap {
  at: number;
  version: number;
  epoch: string;
  owners: Set<string>;
}

/** What an observer of the shard map saw: the map when it began, and each one after. */
export interface PlacementObservation {
  initial?: ObservedMap;
  maps: ObservedMap[];
}

export const observedMap = (map: ShardMapRecord): ObservedMap => ({
  at: performance.now(),
  version: map.version,
  epoch: map.epoch,
  owners: new Set(Object.values(map.shards)),
});

/**
 * Maps written over an observation: version steps within an epoch (a watcher that lagged
 * may skip a version, but the next one it sees still counts it), one per epoch change.
 */
export function mapsWritten(observation: PlacementObservation): number {
  let previous = observation.initial;
  let written = 0;
  for (const map of observation.maps) {
    written += previous && previous.epoch === map.epoch ? map.version - previous.version : 1;
    previous = map;
  }
  return written;
}
