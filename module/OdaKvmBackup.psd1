@{
    RootModule           = 'OdaKvmBackup.dll'
    ModuleVersion        = '0.1.0'
    GUID                 = '6c1f0c53-3b7e-4a52-9f43-2d2b8f6a9e11'
    Author               = 'OdaKvmBackup developers'
    CompanyName          = 'OdaKvmBackup'
    Copyright            = '(c) OdaKvmBackup developers'
    Description          = 'Hot (online) backups of KVM virtual machines on Oracle Database Appliance and libvirt hosts: atomic quiesced external snapshots, verified sparse copies, block commit with pivot, overlay retention, and recovery of interrupted runs; listing, verifying, boot-testing, restoring and pruning of backup sets.'
    PowerShellVersion    = '7.4'
    CompatiblePSEditions = @('Core')
    FormatsToProcess     = @('OdaKvmBackup.format.ps1xml')
    FileList             = @('OdaKvmBackup.dll', 'OdaKvmBackup.Core.dll', 'CliWrap.dll', 'OdaKvmBackup.format.ps1xml', 'LICENSE', 'Scripts/Invoke-KvmNightlyBackup.ps1')
    CmdletsToExport      = @(
        'Get-VmDisk'
        'New-KvmDiskSnapshot'
        'Copy-VmDisk'
        'Invoke-BlockCommit'
        'Move-OverlayToRetention'
        'Repair-KvmBackup'
        'Get-KvmBackup'
        'Test-KvmBackup'
        'Restore-KvmBackup'
        'Remove-KvmBackup'
    )
    FunctionsToExport    = @()
    AliasesToExport      = @()
    VariablesToExport    = @()
    PrivateData          = @{
        PSData = @{
            Tags         = @('Linux', 'KVM', 'libvirt', 'Backup', 'ODA', 'OracleDatabaseAppliance', 'virsh', 'qemu')
            LicenseUri   = 'https://opensource.org/license/mit'
            ReleaseNotes = 'See README.md.'
        }
    }
}
