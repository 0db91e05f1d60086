package fkod

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// User is a user in the partner's tenancy. Name and Archetype are empty when not set.
type User struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	Archetype string    `json:"archetype"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// UserCreateParams is the body of a user creation. Email is required. Archetype is one of
// innovator, explorer, builder, mentor, achiever and collaborator.
type UserCreateParams struct {
	Email     string  `json:"email"`
	Name      *string `json:"name,omitempty"`
	Archetype *string `json:"archetype,omitempty"`
}

// UserUpdateParams lists the fields to change; nil fields stay as they are, and at least one
// field must be set.
//
// NOTE: a nil field is left out of the request, so this type cannot clear a name or an
// archetype; the API clears one only when it receives an explicit null.
type UserUpdateParams struct {
	Email     *string `json:"email,omitempty"`
	Name      *string `json:"name,omitempty"`
	Archetype *string `json:"archetype,omitempty"`
}

// UserListParams selects a page of users, optionally only the user with Email.
type UserListParams struct {
	Limit  int
	Cursor string
	Email  string
}

// Course is a course of the F-KOD catalog (Owner "fkod") or of the partner (Owner "partner").
type Course struct {
	ID          string    `json:"id"`
	Title       string    `json:"title"`
	Description string    `json:"description"`
	Level       string    `json:"level"`
	Owner       string    `json:"owner"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// CourseCreateParams is the body of a course creation. Title is required; Level is one of
// beginner, intermediate and advanced.
type CourseCreateParams struct {
	Title       string  `json:"title"`
	Description *string `json:"description,omitempty"`
	Level       *string `json:"level,omitempty"`
}

// Completion records that a user completed a course.
type Completion struct {
	ID          string    `json:"id"`
	CourseID    string    `json:"course_id"`
	UserID      string    `json:"user_id"`
	Status      string    `json:"status"`
	CompletedAt time.Time `json:"completed_at"`
}

// Mentor is a mentor of the catalog.
type Mentor struct {
	ID             string   `json:"id"`
	Name           string   `json:"name"`
	ExpertiseAreas []string `json:"expertise_areas"`
	Bio            string   `json:"bio"`
}

// MentorMatchParams is the body of a mentor match. UserID is required.
type MentorMatchParams struct {
	UserID string  `json:"user_id"`
	Note   *string `json:"note,omitempty"`
}

// Match pairs a user with a mentor.
type Match struct {
	ID        string    `json:"id"`
	MentorID  string    `json:"mentor_id"`
	UserID    string    `json:"user_id"`
	Note      string    `json:"note"`
	CreatedAt time.Time `json:"created_at"`
}

// String returns a pointer to s, for the optional fields of the parameter types.
func String(s string) *string { return &s }

// UsersService calls /api/v1/users.
type UsersService struct{ client *Client }

// List returns one page of users, newest first.
func (s *UsersService) List(ctx context.Context, params UserListParams,
	options ...RequestOption) (*Page[User], error) {
	query := ListParams{Limit: params.Limit, Cursor: params.Cursor}.query()
	if params.Email != "" {
		query.Set("email", params.Email)
	}
	var page Page[User]
	if err := s.client.call(ctx, http.MethodGet, "/api/v1/users", query, nil, &page,
		options); err != nil {
		return nil, err
	}
	return &page, nil
}

// Iter walks every user, starting at params.Cursor and fetching params.Limit per page.
func (s *UsersService) Iter(ctx context.Context, params UserListParams,
	options ...RequestOption) *Iter[User] {
	return newIter(ctx, params.Cursor, func(ctx context.Context, cursor string) (*Page[User], error) {
		next := params
		next.Cursor = cursor
		return s.List(ctx, next, options...)
	})
}

// Create creates a user. A 409 APIError with code user_exists means the email is taken.
func (s *UsersService) Create(ctx context.Context, params UserCreateParams,
	options ...RequestOption) (*User, error) {
	var user User
	if err := s.client.call(ctx, http.MethodPost, "/api/v1/users", nil, params, &user,
		options); err != nil {
		return nil, err
	}
	return &user, nil
}

// Get returns the user with id, such as "user_12".
func (s *UsersService) Get(ctx context.Context, id string, options ...RequestOption) (*User,
	error) {
	var user User
	if err := s.client.call(ctx, http.MethodGet, "/api/v1/users/"+url.PathEscape(id), nil, nil,
		&user, options); err != nil {
		return nil, err
	}
	return &user, nil
}

// Update changes a user that the partner created.
func (s *UsersService) Update(ctx context.Context, id string, params UserUpdateParams,
	options ...RequestOption) (*User, error) {
	var user User
	if err := s.client.call(ctx, http.MethodPut, "/api/v1/users/"+url.PathEscape(id), nil,
		params, &user, options); err != nil {
		return nil, err
	}
	return &user, nil
}

// CoursesService calls /api/v1/courses.
type CoursesService struct{ client *Client }

// List returns one page of the catalog's and the partner's courses.
func (s *CoursesService) List(ctx context.Context, params ListParams,
	options ...RequestOption) (*Page[Course], error) {
	var page Page[Course]
	if err := s.client.call(ctx, http.MethodGet, "/api/v1/courses", params.query(), nil, &page,
		options); err != nil {
		return nil, err
	}
	return &page, nil
}

// Iter walks every course.
func (s *CoursesService) Iter(ctx context.Context, params ListParams,
	options ...RequestOption) *Iter[Course] {
	return newIter(ctx, params.Cursor, func(ctx context.Context, cursor string) (*Page[Course],
		error) {
		return s.List(ctx, ListParams{Limit: params.Limit, Cursor: cursor}, options...)
	})
}

// Create creates a course of the partner's own.
func (s *CoursesService) Create(ctx context.Context, params CourseCreateParams,
	options ...RequestOption) (*Course, error) {
	var course Course
	if err := s.client.call(ctx, http.MethodPost, "/api/v1/courses", nil, params, &course,
		options); err != nil {
		return nil, err
	}
	return &course, nil
}

// Complete records that the user with userID completed the course with courseID.
func (s *CoursesService) Complete(ctx context.Context, courseID, userID string,
	options ...RequestOption) (*Completion, error) {
	var completion Completion
	body := map[string]string{"user_id": userID}
	if err := s.client.call(ctx, http.MethodPost,
		"/api/v1/courses/"+url.PathEscape(courseID)+"/complete", nil, body, &completion,
		options); err != nil {
		return nil, err
	}
	return &completion, nil
}

// MentorsService calls /api/v1/mentors.
type MentorsService struct{ client *Client }

// List returns one page of the mentor catalog.
func (s *MentorsService) List(ctx context.Context, params ListParams,
	options ...RequestOption) (*Page[Mentor], error) {
	var page Page[Mentor]
	if err := s.client.call(ctx, http.MethodGet, "/api/v1/mentors", params.query(), nil, &page,
		options); err != nil {
		return nil, err
	}
	return &page, nil
}

// Iter walks every mentor.
func (s *MentorsService) Iter(ctx context.Context, params ListParams,
	options ...RequestOption) *Iter[Mentor] {
	return newIter(ctx, params.Cursor, func(ctx context.Context, cursor string) (*Page[Mentor],
		error) {
		return s.List(ctx, ListParams{Limit: params.Limit, Cursor: cursor}, options...)
	})
}

// Match matches a user in the partner's tenancy with the mentor with mentorID.
func (s *MentorsService) Match(ctx context.Context, mentorID string, params MentorMatchParams,
	options ...RequestOption) (*Match, error) {
	var match Match
	if err := s.client.call(ctx, http.MethodPost,
		"/api/v1/mentors/"+url.PathEscape(mentorID)+"/match", nil, params, &match,
		options); err != nil {
		return nil, err
	}
	return &match, nil
}
