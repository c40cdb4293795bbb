import { condition, setHandler } from '@temporalio/workflow';
import {
  pauseSignal,
  pauseUpdate,
  resumeSignal,
  resumeUpdate,
  statusQuery,
  stopSignal,
  stopUpdate,
  type PipelineState,
  type StopRequest,
} from './contract';

/**
 * What operators ask of a running pipeline (pause, resume, stop) and the handlers that take the requests: the
 * status query, the signals, and the updates that return once the pipeline loop reached the phase they wait for.
 */
export class PipelineControl {
  paused: boolean;
  stopRequest: StopRequest | undefined;
  /**
   * Counts pause/resume requests: an update whose request a later one overrode returns instead of waiting for a
   * phase that will not come (pause, then resume before the segment let go).
   */
  private requests = 0;

  constructor(private readonly state: PipelineState) {
    this.paused = state.phase === 'paused';
  }

  pause(): number {
    this.paused = true;
    return ++this.requests;
  }

  resume(): number {
    this.paused = false;
    this.state.error = null;
    return ++this.requests;
  }

  /** Resolves once the pipeline is asked to run again or to stop. */
  untilResumedOrStopped(): Promise<void> {
    return condition(() => !this.paused || !!this.stopRequest);
  }

  install(): void {
    const state = this.state;
    setHandler(statusQuery, () => state);
    setHandler(pauseSignal, () => void this.pause());
    setHandler(resumeSignal, () => void this.resume());
    setHandler(stopSignal, (req) => void (this.stopRequest = req ?? {}));
    const rejectWhileStopping = () => {
      if (this.stopRequest)
        throw new Error(`the pipeline is ${state.phase === 'stopped' ? 'stopped' : 'stopping'}`);
    };
    setHandler(
      pauseUpdate,
      async () => {
        const request = this.pause();
        // 'failed': capture had already stopped on an error; 'stopped': a stop overtook the pause.
        await condition(
          () => ['paused', 'failed', 'stopped'].includes(state.phase) || this.requests !== request,
        );
        return state;
      },
      { validator: rejectWhileStopping },
    );
    setHandler(
      resumeUpdate,
      async () => {
        if (!this.paused) return state;
        const request = this.resume();
        await condition(() => state.phase === 'streaming' || !!this.stopRequest || this.requests !== request);
        return state;
      },
      { validator: rejectWhileStopping },
    );
    setHandler(
      stopUpdate,
      async (req?: StopRequest) => {
        this.stopRequest = { dropSlot: !!this.stopRequest?.dropSlot || !!req?.dropSlot };
        await condition(() => state.phase === 'stopped');
        return state;
      },
      { validator: validStopRequest },
    );
  }
}

/** Inputs come from any client (e.g. `temporal workflow update execute`), so the shape is checked. */
function validStopRequest(req?: StopRequest): void {
  const shapeOk =
    req === undefined ||
    req === null ||
    (typeof req === 'object' && ['boolean', 'undefined'].includes(typeof req.dropSlot));
  if (!shapeOk) throw new Error('stop takes an optional { dropSlot?: boolean }');
}
