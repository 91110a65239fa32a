//! The Vm service: put / delete / get / list / watch / console over the VM manager.

use futures::Stream;

use crate::Result;
use crate::vm::VmManager;
use quiver_rpc::proto;

#[derive(Clone)]
pub struct VmService {
    manager: VmManager,
}

impl VmService {
    pub fn new(manager: VmManager) -> Self {
        VmService { manager }
    }

    pub async fn put_vm(&self, req: &proto::PutVmRequest) -> Result<proto::PutVmResponse> {
        let (status, changed) = self.manager.put(req).await?;
        Ok(proto::PutVmResponse {
            status: Some(status),
            changed,
        })
    }

    pub fn delete_vm(&self, req: &proto::DeleteVmRequest) -> Result<proto::DeleteVmResponse> {
        Ok(proto::DeleteVmResponse {
            existed: self.manager.delete(&req.uid)?,
        })
    }

    pub fn get_vm(&self, req: &proto::GetVmRequest) -> Result<proto::VmStatus> {
        self.manager.get(&req.uid)
    }

    pub fn list_vms(&self, _req: &proto::ListVmsRequest) -> Result<proto::ListVmsResponse> {
        Ok(proto::ListVmsResponse {
            vms: self.manager.list(),
        })
    }

    pub fn watch_vm_status(
        &self,
        _req: &proto::WatchVmStatusRequest,
    ) -> Result<impl Stream<Item = proto::VmStatus> + Send + use<>> {
        Ok(self.manager.watch())
    }

    pub fn stream_console(
        &self,
        req: &proto::StreamConsoleRequest,
    ) -> Result<impl Stream<Item = Result<proto::ConsoleChunk>> + Send + use<>> {
        self.manager.console(&req.uid, req.offset, req.follow)
    }
}
