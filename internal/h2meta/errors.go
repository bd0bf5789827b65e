package h2meta

import (
	"errors"

	"golang.org/x/net/http2"
)

// ReadError says what an error of ReadFrame means for the connection:
// when StreamID is non-zero only that stream is malformed (answer
// RST_STREAM with Code, read on); when Protocol is set the peer broke the
// protocol (answer GOAWAY with Code, close); otherwise reading the
// connection itself failed (close).
type ReadError struct {
	StreamID uint32
	Code     http2.ErrCode
	Protocol bool
}

// Classify sorts an error returned by ReadFrame.
func Classify(err error) ReadError {
	var se http2.StreamError
	if errors.As(err, &se) {
		return ReadError{StreamID: se.StreamID, Code: se.Code}
	}
	if errors.Is(err, http2.ErrFrameTooLarge) {
		return ReadError{Code: http2.ErrCodeFrameSize, Protocol: true}
	}
	var ce http2.ConnectionError
	if errors.As(err, &ce) {
		return ReadError{Code: http2.ErrCode(ce), Protocol: true}
	}
	return ReadError{}
}
