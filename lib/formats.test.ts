import { describe, expect, it } from "vitest";
import { renderTranscript } from "./formats.ts";
import type { Segment, Transcript } from "./transcript.ts";

const transcript: Transcript = {
  task: "transcribe",
  language: "english",
  duration: 4.5,
  text: " Hello there. General Kenobi.",
  segments: [
    { id: 0, start: 0, end: 2.5, text: " Hello there.", tokens: [50364, 2425, 456, 13], seek: 0, temperature: 0, avgLogprob: -0.21, compressionRatio: 0.9, noSpeechProb: 0.01 },
    { id: 1, start: 2.5, end: 4.5, text: " General Kenobi.", tokens: [6996, 591, 268, 13], seek: 0, temperature: 0.2, avgLogprob: -0.4, compressionRatio: 0.9, noSpeechProb: 0.01 },
  ],
};

function withSegments(segments: Array<Pick<Segment, "start" | "end" | "text">>): Transcript {
  return {
    ...transcript,
    segments: segments.map((segment, id) => ({ id, tokens: [], ...segment })),
  };
}

describe("renderTranscript", () => {
  it("renders json as OpenAI's {text} object with duration usage, and logprobs when they were asked for", () => {
    expect(renderTranscript(transcript, "json")).toEqual({
      contentType: "application/json",
      body: '{"text":" Hello there. General Kenobi.","usage":{"type":"duration","seconds":5}}',
    });
    const logprobs = [{ token: " Hello", logprob: -0.1, bytes: [32, 72, 101, 108, 108, 111] }];
    expect(JSON.parse(renderTranscript({ ...transcript, logprobs }, "json").body)).toMatchObject({ logprobs });
  });

  it("renders text trimmed with a trailing newline", () => {
    expect(renderTranscript(transcript, "text")).toEqual({
      contentType: "text/plain; charset=utf-8",
      body: "Hello there. General Kenobi.\n",
    });
  });

  it("renders srt as numbered cues with comma milliseconds and trimmed text", () => {
    expect(renderTranscript(transcript, "srt")).toEqual({
      contentType: "text/plain; charset=utf-8",
      body: "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n" + "2\n00:00:02,500 --> 00:00:04,500\nGeneral Kenobi.\n\n",
    });
  });

  it("renders vtt with the WEBVTT header and dot milliseconds", () => {
    expect(renderTranscript(transcript, "vtt")).toEqual({
      contentType: "text/vtt; charset=utf-8",
      body: "WEBVTT\n\n" + "00:00:00.000 --> 00:00:02.500\nHello there.\n\n" + "00:00:02.500 --> 00:00:04.500\nGeneral Kenobi.\n\n",
    });
  });

  it("renders verbose_json in OpenAI's shape with each segment's window statistics", () => {
    const rendered = renderTranscript(transcript, "verbose_json");
    expect(rendered.contentType).toBe("application/json");
    expect(rendered.body).toBe(
      JSON.stringify({
        task: "transcribe",
        language: "english",
        duration: 4.5,
        text: " Hello there. General Kenobi.",
        segments: [
          {
            id: 0,
            seek: 0,
            start: 0,
            end: 2.5,
            text: " Hello there.",
            tokens: [50364, 2425, 456, 13],
            temperature: 0,
            avg_logprob: -0.21,
            compression_ratio: 0.9,
            no_speech_prob: 0.01,
          },
          {
            id: 1,
            seek: 0,
            start: 2.5,
            end: 4.5,
            text: " General Kenobi.",
            tokens: [6996, 591, 268, 13],
            temperature: 0.2,
            avg_logprob: -0.4,
            compression_ratio: 0.9,
            no_speech_prob: 0.01,
          },
        ],
        usage: { type: "duration", seconds: 5 },
      }),
    );
  });

  it("widens hours past 99 instead of wrapping", () => {
    const long = withSegments([{ start: 360_000, end: 360_001.5, text: "late" }]);
    expect(renderTranscript(long, "srt").body).toBe("1\n100:00:00,000 --> 100:00:01,500\nlate\n\n");
    expect(renderTranscript(long, "vtt").body).toBe("WEBVTT\n\n100:00:00.000 --> 100:00:01.500\nlate\n\n");
  });

  it("rounds milliseconds into the next second rather than printing 1000 ms", () => {
    const t = withSegments([{ start: 59.9996, end: 3599.9999, text: "x" }]);
    expect(renderTranscript(t, "srt").body).toBe("1\n00:01:00,000 --> 01:00:00,000\nx\n\n");
  });

  it("rounds to the nearest millisecond despite binary floating point", () => {
    const t = withSegments([{ start: 1.005, end: 2.0004, text: "x" }]);
    expect(renderTranscript(t, "vtt").body).toBe("WEBVTT\n\n00:00:01.005 --> 00:00:02.000\nx\n\n");
  });

  it("renders an empty transcript as valid empty documents", () => {
    const empty: Transcript = { ...transcript, duration: 0, text: "", segments: [] };
    expect(renderTranscript(empty, "srt").body).toBe("");
    expect(renderTranscript(empty, "vtt").body).toBe("WEBVTT\n\n");
    expect(renderTranscript(empty, "text").body).toBe("\n");
    expect(JSON.parse(renderTranscript(empty, "json").body)).toEqual({ text: "", usage: { type: "duration", seconds: 0 } });
    expect(JSON.parse(renderTranscript(empty, "verbose_json").body)).toMatchObject({ segments: [] });
  });

  it("keeps blank lines and arrows inside segment text from breaking the cue structure", () => {
    const t = withSegments([
      { start: 0, end: 1, text: " first line\n\n  second line \r\n" },
      { start: 1, end: 2, text: "a --> b ---> c" },
    ]);
    expect(renderTranscript(t, "srt").body).toBe("1\n00:00:00,000 --> 00:00:01,000\nfirst line\nsecond line\n\n" + "2\n00:00:01,000 --> 00:00:02,000\na -> b -> c\n\n");
  });

  it("escapes markup characters in vtt cue text", () => {
    const t = withSegments([{ start: 0, end: 1, text: "<b>Tom & Jerry</b> -->" }]);
    expect(renderTranscript(t, "vtt").body).toBe("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n&lt;b&gt;Tom &amp; Jerry&lt;/b&gt; -&gt;\n\n");
  });

  it("drops segments with no visible text from srt and vtt and keeps numbering contiguous", () => {
    const t = withSegments([
      { start: 0, end: 1, text: "one" },
      { start: 1, end: 2, text: "  \n " },
      { start: 2, end: 3, text: "three" },
    ]);
    expect(renderTranscript(t, "srt").body).toBe("1\n00:00:00,000 --> 00:00:01,000\none\n\n2\n00:00:02,000 --> 00:00:03,000\nthree\n\n");
    expect(renderTranscript(t, "vtt").body).not.toContain("00:00:01.000 --> 00:00:02.000");
  });

  it("clamps negative and non-finite times to zero", () => {
    const t = withSegments([{ start: -0.2, end: Number.NaN, text: "x" }]);
    expect(renderTranscript(t, "srt").body).toBe("1\n00:00:00,000 --> 00:00:00,000\nx\n\n");
  });
});
