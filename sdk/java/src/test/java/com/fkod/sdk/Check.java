package com.fkod.sdk;

import java.util.Objects;

/** Assertions for the SDK's tests; each failure names what was expected and what was found. */
final class Check {
    private Check() {
    }

    /** A test that cannot run here, such as a live test without FKOD_BASE_URL. */
    static final class Skipped extends RuntimeException {
        private static final long serialVersionUID = 1L;

        Skipped(String reason) {
            super(reason);
        }
    }

    static void skip(String reason) {
        throw new Skipped(reason);
    }

    static String requireEnv(String name) {
        String value = System.getenv(name);
        if (value == null || value.isEmpty()) {
            skip(name + " is not set; run tests/sdk/test_java_sdk.py to test against a live server");
        }
        return value;
    }

    static void isTrue(boolean condition, String message) {
        if (!condition) {
            throw new AssertionError(message);
        }
    }

    static void equal(Object expected, Object actual, String subject) {
        if (!Objects.equals(expected, actual)) {
            throw new AssertionError(subject + ": expected <" + expected + "> but was <" + actual + ">");
        }
    }

    /** Runs {@code action} and returns the exception of type {@code type} it throws. */
    static <T extends Throwable> T raises(Class<T> type, Runnable action) {
        try {
            action.run();
        } catch (Throwable thrown) {
            if (type.isInstance(thrown)) {
                return type.cast(thrown);
            }
            throw new AssertionError("expected " + type.getSimpleName() + " but got " + thrown, thrown);
        }
        throw new AssertionError("expected " + type.getSimpleName() + " but nothing was thrown");
    }
}
