package h2meta

import (
	"fmt"
	"io"
	"testing"

	"golang.org/x/net/http2"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want ReadError
	}{
		{"stream error", http2.StreamError{StreamID: 5, Code: http2.ErrCodeProtocol}, ReadError{StreamID: 5, Code: http2.ErrCodeProtocol}},
		{"wrapped stream error", fmt.Errorf("x: %w", http2.StreamError{StreamID: 7, Code: http2.ErrCodeFlowControl}), ReadError{StreamID: 7, Code: http2.ErrCodeFlowControl}},
		{"frame too large", http2.ErrFrameTooLarge, ReadError{Code: http2.ErrCodeFrameSize, Protocol: true}},
		{"connection error", http2.ConnectionError(http2.ErrCodeCompression), ReadError{Code: http2.ErrCodeCompression, Protocol: true}},
		{"read failure", io.ErrUnexpectedEOF, ReadError{}},
		{"EOF", io.EOF, ReadError{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Classify(c.err); got != c.want {
				t.Fatalf("Classify(%v) = %+v, want %+v", c.err, got, c.want)
			}
		})
	}
}
