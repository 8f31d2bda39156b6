from chat import views
from django.contrib.auth.views import LoginView
from django.urls import path

urlpatterns = [
    path("login/", LoginView.as_view(template_name="chat/login.html"), name="login"),
    path("rooms/<slug:room>/", views.room, name="room"),
    path("rooms/<slug:room>/announce", views.announce, name="announce"),
]
