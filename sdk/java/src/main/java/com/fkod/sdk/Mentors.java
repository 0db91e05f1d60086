package com.fkod.sdk;

import java.util.LinkedHashMap;
import java.util.Map;

/** The /api/v1/mentors operations. */
public final class Mentors {
    private final FkodClient client;

    Mentors(FkodClient client) {
        this.client = client;
    }

    /** Returns one page of the mentor catalog. */
    public Page<Mentor> list(ListParams params) {
        return list(params, RequestOptions.none());
    }

    public Page<Mentor> list(ListParams params, RequestOptions options) {
        return Page.fromJson(client.request("GET", "/api/v1/mentors", params.query(), null,
                options), Mentor::fromJson);
    }

    /** Iterates over every mentor from the page that {@code params} selects onwards. */
    public PageIterable<Mentor> listAll(ListParams params) {
        return new PageIterable<>(params, next -> list(next));
    }

    /** Matches a user in the partner's tenancy with the mentor; {@code note} may be null. */
    public Match match(String mentorId, String userId, String note) {
        return match(mentorId, userId, note, RequestOptions.none());
    }

    public Match match(String mentorId, String userId, String note, RequestOptions options) {
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("user_id", userId);
        if (note != null) {
            body.put("note", note);
        }
        String path = "/api/v1/mentors/" + FkodClient.pathSegment(mentorId) + "/match";
        return Match.fromJson(client.request("POST", path, null, body, options));
    }
}
