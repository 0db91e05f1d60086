package com.fkod.sdk;

import java.net.URI;
import java.net.http.HttpHeaders;

/**
 * One HTTP attempt of a call, reported to the client's attempt listener after it ends.
 *
 * @param number 0 for the first attempt, 1 for the first retry, and so on
 * @param status the response status, or -1 when no response arrived
 * @param requestHeaders the headers the SDK sent
 * @param error the failure when no response arrived, or null
 */
public record Attempt(String method, URI uri, int number, int status, HttpHeaders requestHeaders,
                      Throwable error) {
}
