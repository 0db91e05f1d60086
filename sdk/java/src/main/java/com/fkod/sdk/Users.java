package com.fkod.sdk;

/** The /api/v1/users operations. */
public final class Users {
    private final FkodClient client;

    Users(FkodClient client) {
        this.client = client;
    }

    /** Returns one page of users, newest first; {@link ListParams#email} filters by email. */
    public Page<User> list(ListParams params) {
        return list(params, RequestOptions.none());
    }

    public Page<User> list(ListParams params, RequestOptions options) {
        return Page.fromJson(client.request("GET", "/api/v1/users", params.query(), null, options),
                User::fromJson);
    }

    /** Iterates over every user from the page that {@code params} selects onwards. */
    public PageIterable<User> listAll(ListParams params) {
        return new PageIterable<>(params, next -> list(next));
    }

    /** Creates a user; a 409 {@code user_exists} means the email is taken. */
    public User create(UserCreateParams params) {
        return create(params, RequestOptions.none());
    }

    public User create(UserCreateParams params, RequestOptions options) {
        return User.fromJson(client.request("POST", "/api/v1/users", null, params.toJson(), options));
    }

    /** Returns the user with this id, such as "user_12". */
    public User get(String id) {
        return get(id, RequestOptions.none());
    }

    public User get(String id, RequestOptions options) {
        return User.fromJson(client.request("GET", "/api/v1/users/" + FkodClient.pathSegment(id),
                null, null, options));
    }

    /** Changes a user that the partner created. */
    public User update(String id, UserUpdateParams params) {
        return update(id, params, RequestOptions.none());
    }

    public User update(String id, UserUpdateParams params, RequestOptions options) {
        return User.fromJson(client.request("PUT", "/api/v1/users/" + FkodClient.pathSegment(id),
                null, params.toJson(), options));
    }
}
