package dev.vigil.flink.decode;

/**
 * Why a record is not this topic's: the text after {@code "undecodable: "} in its dead letter,
 * exactly as the Python decode's DecodeError (or ValueError) says it.
 */
public final class DecodeError extends Exception {
    public DecodeError(String message) {
        super(message, null, false, false);  // data, not a failure: no stack trace
    }
}
