"""Cornice services of the F-KOD learning API under ``/api/v1``, behind the gateway."""

from __future__ import annotations

from cornice import Service

from fkod.core.api import AUTH_API_KEY, PageQuery, operation, paginate
from fkod.core.auth.models import User
from fkod.core.ids import parse_id
from fkod.plugins.learning import schemas, services
from fkod.plugins.learning.models import Course, Mentor

users = Service(name="v1_users", path="/api/v1/users", description="Users in your tenancy")
user = Service(name="v1_user", path="/api/v1/users/{id}", description="One user")
courses = Service(name="v1_courses", path="/api/v1/courses", description="Courses")
course_complete = Service(name="v1_course_complete", path="/api/v1/courses/{id}/complete",
                          description="Record that a user completed a course")
mentors = Service(name="v1_mentors", path="/api/v1/mentors", description="Mentors")
mentor_match = Service(name="v1_mentor_match", path="/api/v1/mentors/{id}/match",
                       description="Match a user with a mentor")

SERVICES = (users, user, courses, course_complete, mentors, mentor_match)


@operation(users, "GET", summary="List the users in your tenancy, newest first",
           auth=AUTH_API_KEY, scope="users:read", query=schemas.UserListQuery,
           response=schemas.UserSchema, paginated=True)
def list_users(request):
    select = services.users_in_tenancy(request.principal)
    if "email" in request.query:
        select = select.where(User.email == request.query["email"].lower())
    return paginate(select, User.id, request.query, request.dbsession)


@operation(users, "POST", summary="Create a user in your tenancy", auth=AUTH_API_KEY,
           scope="users:write", body=schemas.CreateUserBody, response=schemas.UserSchema,
           status=201, errors=((409, "user_exists"),))
def create_user(request):
    return services.create_user(request, request.validated)


@operation(user, "GET", summary="Get a user in your tenancy", auth=AUTH_API_KEY,
           scope="users:read", response=schemas.UserSchema, errors=((404, "not_found"),))
def get_user(request):
    user_id = parse_id("user", request.matchdict["id"])
    return services.get_user(request.dbsession, request.principal, user_id)


@operation(user, "PUT", summary="Update a user you created", auth=AUTH_API_KEY,
           scope="users:write", body=schemas.UpdateUserBody, response=schemas.UserSchema,
           errors=((404, "not_found"), (403, "not_user_owner"), (409, "user_exists")))
def update_user(request):
    user_id = parse_id("user", request.matchdict["id"])
    return services.update_user(request, user_id, request.validated)


@operation(courses, "GET", summary="List the course catalog and your own courses",
           auth=AUTH_API_KEY, scope="courses:read", query=PageQuery,
           response=schemas.CourseSchema, paginated=True)
def list_courses(request):
    return paginate(services.visible_courses(request.principal), Course.id, request.query,
                    request.dbsession)


@operation(courses, "POST", summary="Create a course of your own", auth=AUTH_API_KEY,
           scope="courses:write", body=schemas.CreateCourseBody, response=schemas.CourseSchema,
           status=201)
def create_course(request):
    return services.create_course(request, request.validated)


@operation(course_complete, "POST", summary="Record that a user in your tenancy completed a course",
           auth=AUTH_API_KEY, scope="courses:write", body=schemas.CompleteCourseBody,
           response=schemas.CompletionSchema, status=201,
           errors=((404, "not_found"), (409, "already_completed")))
def complete_course(request):
    course_id = parse_id("course", request.matchdict["id"])
    return services.complete_course(request, course_id, request.validated["user_id"])


@operation(mentors, "GET", summary="List the mentor catalog", auth=AUTH_API_KEY,
           scope="mentors:read", query=PageQuery, response=schemas.MentorSchema, paginated=True)
def list_mentors(request):
    return paginate(services.visible_mentors(request.principal), Mentor.id, request.query,
                    request.dbsession, descending=False)


@operation(mentor_match, "POST", summary="Match a user in your tenancy with a mentor",
           auth=AUTH_API_KEY, scope="mentors:write", body=schemas.MatchMentorBody,
           response=schemas.MatchSchema, status=201, errors=((404, "not_found"),))
def match_mentor(request):
    mentor_id = parse_id("mentor", request.matchdict["id"])
    return services.match_mentor(request, mentor_id, request.validated["user_id"],
                                 request.validated.get("note"))
