"""Request bodies: the contract's validation rules bound to fields, so a bad field is a 422."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    StrictBool,
    ValidationInfo,
    field_validator,
)

from cnop.core.money import Amount
from cnop.services.user import validation as v

Username = Annotated[str, AfterValidator(v.check_username)]
Password = Annotated[str, AfterValidator(v.check_password)]
Email = Annotated[EmailStr, AfterValidator(v.check_email)]
Name = Annotated[str, AfterValidator(v.check_name)]
Phone = Annotated[str, AfterValidator(v.check_phone)]
DateOfBirth = Annotated[str, AfterValidator(v.check_date_of_birth)]


class _Body(BaseModel):
    # Unknown keys are ignored (clients of the original API send extras, e.g. confirm fields).
    model_config = ConfigDict(extra="ignore")


class RegisterRequest(_Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "username": "alice_trader",
                    "email": "alice@example.com",
                    "password": "Str0ng!Passw0rd",
                    "first_name": "Alice",
                    "last_name": "Trader",
                }
            ]
        }
    )

    username: Username
    email: Email
    password: Password
    first_name: Name
    last_name: Name
    phone: Phone | None = None
    date_of_birth: DateOfBirth | None = None
    marketing_emails_consent: StrictBool = False


class LoginRequest(_Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"username": "alice_trader", "password": "Str0ng!Passw0rd"}]
        }
    )

    username: Username
    password: Password


class LogoutRequest(_Body):
    access_token: str | None = None


class ProfileUpdate(_Body):
    """Any subset; ``phone`` and ``date_of_birth`` may be sent as null to clear them."""

    first_name: Name | None = None
    last_name: Name | None = None
    email: Email | None = None
    phone: Phone | None = None
    date_of_birth: DateOfBirth | None = None
    marketing_emails_consent: StrictBool | None = None

    @field_validator("first_name", "last_name", "email", "marketing_emails_consent")
    @classmethod
    def _not_null(cls, value: object, info: ValidationInfo) -> object:
        # Runs only for values the client sent: an explicit null cannot clear a required field.
        if value is None:
            raise ValueError(f"{info.field_name} cannot be null")
        return value


class AmountRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"amount": "100.00"}]})

    amount: Amount
