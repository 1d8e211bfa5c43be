"""Operations: users, `crm doctor` and `crm explain`."""
