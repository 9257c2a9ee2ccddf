include $(sort $(wildcard $(BR2_EXTERNAL_SEALGATE_PATH)/package/*/*.mk))
