/** What a finished transcription is, independent of how it is rendered or delivered. */
export interface Segment {
  id: number;
  /** Seconds from the start of the audio. */
  start: number;
  end: number;
  text: string;
  tokens: number[];
}

export interface Transcript {
  task: "transcribe" | "translate";
  /** Whisper language name ("english"), as OpenAI's verbose_json reports it. */
  language: string;
  /** Seconds of audio processed. */
  duration: number;
  text: string;
  segments: Segment[];
}

export const RESPONSE_FORMATS = ["json", "text", "srt", "vtt", "verbose_json"] as const;
export type ResponseFormat = (typeof RESPONSE_FORMATS)[number];
