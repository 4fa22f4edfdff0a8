/** What a finished transcription is, independent of how it is rendered or delivered. */
export interface Segment {
  id: number;
  /** Seconds from the start of the audio. */
  start: number;
  end: number;
  text: string;
  /** The segment's token ids, timestamp tokens included. */
  tokens: number[];
  /**
   * Its window's offset in 10 ms frames, and the statistics of the decode the window kept. Absent
   * only in results stored by versions that did not record them.
   */
  seek?: number;
  temperature?: number;
  avgLogprob?: number;
  compressionRatio?: number;
  noSpeechProb?: number;
}

/** A text token with its log-probability (OpenAI's include[]=logprobs). */
export interface TokenLogprob {
  token: string;
  logprob: number;
  bytes: number[];
}

export interface Transcript {
  task: "transcribe" | "translate";
  /** Whisper language name ("english"), as OpenAI's verbose_json reports it: for a translation, "english", the output's. */
  language: string;
  /** Seconds of audio processed. */
  duration: number;
  text: string;
  segments: Segment[];
  /** Present when asked for: every text token of the transcript in order. */
  logprobs?: TokenLogprob[];
  /** Present when asked for: every word with its own times, in order (OpenAI's timestamp_granularities[]=word). */
  words?: Word[];
}

export interface Word {
  /** Without the space before it, as OpenAI returns words. */
  word: string;
  /** Seconds from the start of the audio. */
  start: number;
  end: number;
}

export const RESPONSE_FORMATS = ["json", "text", "srt", "vtt", "verbose_json"] as const;
export type ResponseFormat = (typeof RESPONSE_FORMATS)[number];
