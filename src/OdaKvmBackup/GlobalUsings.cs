// Made by tools/Relayout.ps1 (run it again after adding a folder): every namespace of the core, in every file.
global using OdaKvmBackup.Core;
global using OdaKvmBackup.Core.Copies;
global using OdaKvmBackup.Core.Host;
global using OdaKvmBackup.Core.Paths;
global using OdaKvmBackup.Core.Run;
global using OdaKvmBackup.Core.RunState;
global using OdaKvmBackup.Core.Steps;
global using OdaKvmBackup.Core.Stores;
global using OdaKvmBackup.Core.Stores.Ssh;
global using OdaKvmBackup.Core.WayBack;
