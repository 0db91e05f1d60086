package com.fkod.sdk;

import java.util.Map;

/** The /api/v1/courses operations. */
public final class Courses {
    private final FkodClient client;

    Courses(FkodClient client) {
        this.client = client;
    }

    /** Returns one page of the catalog's and the partner's courses. */
    public Page<Course> list(ListParams params) {
        return list(params, RequestOptions.none());
    }

    public Page<Course> list(ListParams params, RequestOptions options) {
        return Page.fromJson(client.request("GET", "/api/v1/courses", params.query(), null,
                options), Course::fromJson);
    }

    /** Iterates over every course from the page that {@code params} selects onwards. */
    public PageIterable<Course> listAll(ListParams params) {
        return new PageIterable<>(params, next -> list(next));
    }

    /** Creates a course of the partner's own. */
    public Course create(CourseCreateParams params) {
        return create(params, RequestOptions.none());
    }

    public Course create(CourseCreateParams params, RequestOptions options) {
        return Course.fromJson(client.request("POST", "/api/v1/courses", null, params.toJson(),
                options));
    }

    /** Records that a user in the partner's tenancy completed the course. */
    public Completion complete(String courseId, String userId) {
        return complete(courseId, userId, RequestOptions.none());
    }

    public Completion complete(String courseId, String userId, RequestOptions options) {
        String path = "/api/v1/courses/" + FkodClient.pathSegment(courseId) + "/complete";
        return Completion.fromJson(client.request("POST", path, null, Map.of("user_id", userId),
                options));
    }
}
