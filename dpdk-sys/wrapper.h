/* The DPDK headers fulcrum binds to. bindgen reads this file; the static-inline
 * functions it finds are wrapped into C by bindgen and compiled by build.rs. */
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_tcp.h>
#include <rte_udp.h>
#include <rte_prefetch.h>
#include <rte_version.h>
#include <rte_pdump.h>
#include <rte_bus_vdev.h>
