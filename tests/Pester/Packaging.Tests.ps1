# The module as users get it: a package from a PowerShell repository (a real local file repository, with
# PSResourceGet), installed into an empty module folder, imported in a fresh pwsh, and used on the lab VM. Also what
# importing costs, and what the module does where it cannot work.
BeforeAll {
    . (Join-Path $PSScriptRoot 'TestHelpers.ps1')
    Initialize-Lab -VmName linux_vm
    $script:Pwsh = @([Environment]::ProcessPath, [Environment]::GetCommandLineArgs()[0])
    $script:BuiltModule = Split-Path $ModuleManifest

    # A pwsh whose home and data folders (module path, PSResourceGet's repository list) are scratch ones: nothing of
    # this machine's own settings is used or changed.
    function Invoke-IsolatedPwsh([string] $DataHome, [string] $Command) {
        # It must exist: where it does not, .NET finds no data folder and PSResourceGet writes its list under the cwd.
        $null = New-Item -ItemType Directory -Force -Path (Join-Path $DataHome '.local/share')
        $psi = [Diagnostics.ProcessStartInfo]::new($Pwsh[0])
        foreach ($a in @($Pwsh[1], '-NoProfile', '-NonInteractive', '-Command', $Command)) { $psi.ArgumentList.Add($a) }
        $psi.Environment['HOME'] = $DataHome
        $psi.Environment['XDG_DATA_HOME'] = Join-Path $DataHome '.local/share'
        $null = $psi.Environment.Remove('PSModulePath')
        $psi.RedirectStandardOutput = $true; $psi.RedirectStandardError = $true; $psi.UseShellExecute = $false
        $p = [Diagnostics.Process]::Start($psi)
        $out = $p.StandardOutput.ReadToEndAsync(); $err = $p.StandardError.ReadToEndAsync()
        $p.WaitForExit()
        [pscustomobject]@{ ExitCode = $p.ExitCode; Out = $out.Result; Err = $err.Result }
    }
}

Describe 'A package in a local PowerShell repository' {
    BeforeAll {
        $script:repository = New-TestFolder repository
        $script:dataHome = New-TestFolder empty-home
        $script:published = Invoke-IsolatedPwsh $dataHome @"
Register-PSResourceRepository -Name local -Uri '$repository' -Trusted
Publish-PSResource -Path '$BuiltModule' -Repository local
Install-PSResource -Name OdaKvmBackup -Repository local -Scope CurrentUser -TrustRepository
(Get-InstalledPSResource -Name OdaKvmBackup).InstalledLocation
"@
    }

    It 'is accepted by the repository, with the version, tags, licence and explicit exports of the manifest' {
        $published.ExitCode | Should -Be 0 -Because $published.Err
        # The repository was registered in the scratch data folder, not in this machine's own settings.
        Test-Path (Join-Path $dataHome '.local/share/PSResourceGet/PSResourceRepository.xml') | Should -BeTrue
        $nupkg = @(Get-ChildItem -Path $repository -Filter 'OdaKvmBackup.*.nupkg')
        $nupkg.Count | Should -Be 1
        $version = ([xml](Get-Content -Raw (Join-Path $RepoRoot 'Directory.Build.props'))).Project.PropertyGroup.Version
        $nupkg[0].Name | Should -Be "OdaKvmBackup.$version.nupkg"
        Add-Type -AssemblyName System.IO.Compression.FileSystem
        $zip = [IO.Compression.ZipFile]::OpenRead($nupkg[0].FullName)
        try {
            $entries = @($zip.Entries.FullName)
            $nuspec = [xml]([IO.StreamReader]::new(($zip.Entries | Where-Object FullName -eq 'OdaKvmBackup.nuspec').Open()).ReadToEnd())
        }
        finally { $zip.Dispose() }
        $entries | Should -Contain 'OdaKvmBackup.psd1'
        $entries | Should -Contain 'en-US/OdaKvmBackup.dll-Help.xml'
        $entries | Should -Contain 'LICENSE'
        $entries | Should -Not -Contain 'System.Management.Automation.dll'
        $nuspec.package.metadata.tags | Should -Match 'KVM'
        $nuspec.package.metadata.licenseUrl | Should -Match 'mit'
        $manifest = Import-PowerShellDataFile $ModuleManifest
        $manifest.CompatiblePSEditions | Should -Be @('Core')
        $manifest.FunctionsToExport.Count | Should -Be 0
        $manifest.CmdletsToExport | Should -Contain 'Copy-VmDisk'
    }

    It 'installs with Install-PSResource into an empty module path, and backs up the lab VM from a fresh pwsh' {
        $published.ExitCode | Should -Be 0 -Because $published.Err
        $installed = ($published.Out.Trim() -split "`n")[-1].Trim()
        $installed | Should -BeLike "$dataHome/*"
        $r = Invoke-IsolatedPwsh $dataHome "Import-Module OdaKvmBackup; (Get-Module OdaKvmBackup).ModuleBase; Get-VmDisk linux_vm | ForEach-Object Target"
        $r.ExitCode | Should -Be 0 -Because $r.Err
        $lines = @($r.Out.Trim() -split "`n" | ForEach-Object Trim)
        $lines[0] | Should -BeLike "$dataHome/*"
        $lines[1..2] | Should -Be @('vda', 'vdb')
    }
}

Describe 'Importing the module' {
    It 'is quick in a fresh pwsh' {
        $times = foreach ($i in 1..3) {
            $r = Invoke-IsolatedPwsh (New-TestFolder import) "[Math]::Round((Measure-Command { Import-Module '$ModuleManifest' }).TotalSeconds, 3)"
            [double]$r.Out.Trim()
        }
        $median = ($times | Sort-Object)[1]
        Add-Content -Path (Join-Path $RepoRoot 'out/import-time.txt') -Value ("Import-Module in a fresh pwsh: median {0:0.000} s of {1}" -f $median, ($times -join ', '))
        $median | Should -BeLessThan 0.3
    }

    It 'works on a Linux machine without libvirt, and a cmdlet that needs virsh says what to install' {
        $r = Invoke-IsolatedPwsh (New-TestFolder novirsh) "`$env:PATH = '/nonexistent'; Import-Module '$ModuleManifest'; Get-VmDisk linux_vm -ErrorVariable e -ErrorAction SilentlyContinue; `$e[0].FullyQualifiedErrorId; `$e[0].ToString()"
        $r.ExitCode | Should -Be 0 -Because $r.Err
        $r.Out | Should -Match 'ToolNotFound,OdaKvmBackup.Commands.GetVmDiskCommand'
        $r.Out | Should -Match 'virsh'
        $r.Out | Should -Match 'libvirt-client'
    }

    It 'imports off the KVM host for its help, and every cmdlet there stops at once with the way to run it on the host' {
        # A Windows jump host, played on Linux: the platform check is the one thing changed. PATH has no virsh, so a
        # cmdlet that went past the check would fail with ToolNotFound instead.
        $calls = @(
            'Get-VmDisk linux_vm', "Get-VmDisk linux_vm | New-KvmDiskSnapshot", "@() | Copy-VmDisk -Destination /tmp", "@() | Invoke-BlockCommit",
            'Repair-KvmBackup -WhatIf', 'Get-KvmBackup /tmp', 'Remove-KvmBackup -Path /tmp -KeepLast 1 -WhatIf')
        $script = @"
`$env:PATH = '/nonexistent'
Import-Module '$ModuleManifest'
[OdaKvmBackup.Commands.KvmHostPlatform].GetField('IsKvmHost', [Reflection.BindingFlags]'NonPublic,Static').SetValue(`$null, `$false)
'synopsis: ' + (Get-Help Copy-VmDisk).Synopsis
foreach (`$call in @('$($calls -join "','")')) {
    `$e = `$null
    try { Invoke-Expression `$call -ErrorAction Stop -ErrorVariable e } catch { `$e = `$_ }
    'result: ' + `$call + ' => ' + @(`$e)[0].FullyQualifiedErrorId
}
try { Get-VmDisk linux_vm -ErrorAction Stop } catch { 'message: ' + `$_.ToString() }
"@
        $r = Invoke-IsolatedPwsh (New-TestFolder jumphost) $script
        $r.ExitCode | Should -Be 0 -Because $r.Err
        $r.Out | Should -Match 'synopsis: \S'
        $results = @($r.Out -split "`n" | Where-Object { $_ -like 'result: *' })
        $results.Count | Should -Be $calls.Count
        foreach ($line in $results) { $line | Should -Match '=> NotOnKvmHost,OdaKvmBackup\.Commands\.' }
        $r.Out | Should -Match 'message: OdaKvmBackup runs on the KVM host'
        $r.Out | Should -Match 'Invoke-Command -HostName'
    }
}
