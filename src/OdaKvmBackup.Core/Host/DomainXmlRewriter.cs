using System.Text.RegularExpressions;
using System.Xml;
using System.Xml.Linq;

namespace OdaKvmBackup.Core.Host;

/// <summary>One disk of a copy's definition: the file it uses and that file's format; for a boot test's overlay, the
/// copy under it (<paramref name="BackingFile"/>, inspected already), which the definition names as the overlay's
/// whole backing chain so that QEMU follows nothing else.</summary>
internal sealed record DomainCopyDisk(string File, string Format, string? BackingFile = null, string? BackingFormat = null);

/// <summary>How to build the definition of a copy of a VM from its saved domain.xml.</summary>
/// <param name="NewName">The copy's name.</param>
/// <param name="Disks">Target (vda) -> the copy's disk. Disks of the saved XML that are not in here are left out of
/// the copy (with a note).</param>
/// <param name="DeviceFolder">Where the copy's serial/console logs and sockets go (each named after the copy).</param>
/// <param name="AllowedFolders">The only folders a path of the copy's definition may lie in (besides what comes
/// from the host: emulator, firmware, the VM's own boot files): the restored disks' folder, the device folder.</param>
/// <param name="DropInterfaces">True for a boot test: no network at all. False for a restore: interfaces on a
/// network or a bridge stay, without their MAC addresses (libvirt gives new ones).</param>
/// <param name="SerialToFile">True for a boot test: every serial port and console writes to a log file in
/// <paramref name="DeviceFolder"/>, so that a guest without an agent can be watched booting.</param>
internal sealed record DomainCopyRequest(
    string NewName,
    IReadOnlyDictionary<string, DomainCopyDisk> Disks,
    string DeviceFolder,
    IReadOnlyList<string> AllowedFolders,
    bool DropInterfaces,
    bool SerialToFile = false);

/// <summary>The boot files (direct kernel boot) a domain's definition names.</summary>
internal sealed record DomainBootFiles(string? Kernel, string? Initrd, string? Dtb);

/// <summary>
/// What a copy's definition takes from the host, never from the set: the emulator and the firmware files the host
/// offers (virsh domcapabilities for the saved domain's virt type, arch and machine), and the boot files that the
/// host's own definition of the VM uses (<paramref name="OwnBootFiles"/>, null when this host does not define
/// <paramref name="SourceDomain"/>).
/// </summary>
internal sealed record HostDomainFacts(string SourceDomain, string Emulator, IReadOnlyList<string> Loaders, DomainBootFiles? OwnBootFiles);

/// <summary>The copy's definition. <paramref name="Notes"/>: what a user must know of the copy (NVRAM not reused,
/// CD-ROMs ejected, interfaces, disks left out). <paramref name="LeftOut"/>: each part of the saved definition that
/// the copy was not built from, and why (for -Verbose).</summary>
internal sealed record DomainCopy(string Xml, IReadOnlyList<string> Notes, IReadOnlyList<string> LeftOut, bool HasGuestAgentChannel, string? ConsoleLog);

/// <summary>
/// Builds the definition of a copy of a VM (a boot test's throw-away VM, a restore under a new name) from its saved
/// domain.xml, the way OpenStack Nova builds a domain from its own objects: nothing of the saved XML is passed on as
/// it is. The copy is made of what it needs and what is known to be safe, each value checked: name (new), memory,
/// vCPUs and CPU model, OS type, machine and boot order, features, clock, lifecycle actions, the disks (only the
/// restored files or the boot test's overlays), controllers, input, video, graphics on the loopback only, a random
/// number generator on /dev/urandom or /dev/random, balloon, watchdog, the guest agent channel, serial ports and
/// consoles (pty, or files and sockets in the copy's own folder), and for a restore the interfaces on a network or a
/// bridge. The emulator and firmware come from the host (<see cref="HostDomainFacts"/>); a kernel, initrd or dtb only
/// when the host's own definition of that VM uses the very same file. No UUID, MAC address, NVRAM file, seclabel,
/// metadata or element of another namespace (qemu:commandline) ever reaches the copy. Host devices and shared
/// folders are refused (the copy could not be the VM without them); anything else unknown is left out and said so.
/// </summary>
internal static partial class DomainXmlRewriter
{
    private const int MaxDefinitionChars = 4 << 20;
    private static readonly string[] RandomSources = ["/dev/urandom", "/dev/random"];

    /// <summary>Reads what the copy's definition takes from the host: `virsh domcapabilities` for the saved domain's
    /// virt type, arch and machine (each checked to be a plain name first: they become virsh arguments), and the boot
    /// files of the host's own definition of <paramref name="sourceDomain"/>, if it defines it.</summary>
    public static async Task<HostDomainFacts> ReadHostFactsAsync(VirshClient virsh, string savedXml, string sourceDomain, string newName, CancellationToken ct)
    {
        var saved = ParseSaved(savedXml, newName);
        var virtType = VirtType(saved, newName);
        var type = saved.Element("os")?.Element("type");
        var arch = PlainName((string?)type?.Attribute("arch"), "arch", newName);
        var machine = PlainName((string?)type?.Attribute("machine"), "machine", newName);
        HostDomainCapabilities capabilities;
        try
        {
            capabilities = await virsh.DomainCapabilitiesAsync(virtType, arch, machine, ct).ConfigureAwait(false);
        }
        catch (VirshException ex) when (ex.Failure == VirshFailure.Other)
        {
            throw NotRestorable($"this host's QEMU offers no {virtType} domain for arch '{arch ?? "(default)"}' and machine '{machine ?? "(default)"}' ({VirshErrors.Message(ex.StandardError)})", newName);
        }
        DomainBootFiles? own = null;
        try
        {
            var os = XDocument.Parse(await virsh.DumpXmlAsync(sourceDomain, inactive: true, ct).ConfigureAwait(false)).Root?.Element("os");
            own = new DomainBootFiles(Text(os?.Element("kernel")), Text(os?.Element("initrd")), Text(os?.Element("dtb")));
        }
        catch (VirshException ex) when (ex.Failure == VirshFailure.DomainNotFound)
        {
        }
        return new HostDomainFacts(sourceDomain, capabilities.Emulator, capabilities.Loaders, own);
    }

    /// <summary>Builds the copy's definition (see the class summary); throws DomainXmlNotRestorable, naming what,
    /// when it cannot be built safely.</summary>
    public static DomainCopy Rewrite(string savedXml, DomainCopyRequest request, HostDomainFacts host)
    {
        var saved = ParseSaved(savedXml, request.NewName);
        var builder = new Builder(saved, request, host);
        var domain = builder.Build();
        RequireOnlyAllowedPaths(domain, request, builder.HostFiles);
        return new DomainCopy(new XDocument(domain).ToString(), builder.Notes, builder.LeftOut, builder.HasGuestAgentChannel, builder.ConsoleLog);
    }

    /// <summary>
    /// The last line of defence, over the built definition: it holds no element of another namespace, and every host
    /// path in it lies in one of the copy's own folders or is one of <paramref name="hostFiles"/> (the host's
    /// emulator and firmware, the VM's own boot files, the copies under a boot test's overlays, /dev/urandom).
    /// Anything else is refused, naming the element and the path.
    /// </summary>
    public static void RequireOnlyAllowedPaths(XElement root, DomainCopyRequest request, IReadOnlyCollection<string>? hostFiles = null)
    {
        var allowed = request.AllowedFolders.Append(request.DeviceFolder).Select(FileSystemPaths.Normalize).ToList();
        var files = new HashSet<string>(hostFiles ?? [], StringComparer.Ordinal);
        bool Allowed(string path) => files.Contains(path) || allowed.Any(folder => FileSystemPaths.IsSameOrInside(path, folder));
        foreach (var element in root.DescendantsAndSelf())
        {
            if (element.Name.Namespace != XNamespace.None)
                throw NotRestorable($"<{element.Name.LocalName}> is in the namespace {element.Name.NamespaceName}", request.NewName);
            foreach (var attribute in element.Attributes().Where(a => a.Value.StartsWith('/')))
            {
                if (!Allowed(attribute.Value))
                    throw NotRestorable($"<{element.Name.LocalName} {attribute.Name.LocalName}='{attribute.Value}'> (in <{element.Parent?.Name.LocalName}>) names a file of the host that a copy cannot share", request.NewName);
            }
            if (!element.HasElements && element.Value.Trim().StartsWith('/') && element.Name.LocalName is not ("description" or "title" or "cmdline")
                && !Allowed(element.Value.Trim()))
                throw NotRestorable($"<{element.Name.LocalName}>{element.Value.Trim()}</{element.Name.LocalName}> names a file of the host that a copy cannot share", request.NewName);
        }
    }

    /// <summary>Every disk source in a definition (file, block device, or a network/volume name), for the check
    /// against the host's production disks.</summary>
    public static IReadOnlyList<string> DiskSources(string xml) =>
        DomainXml.Parse(xml).Disks.Select(d => d.Source).OfType<string>().ToList();

    /// <summary>The saved definition, read without a DTD (no entities: nothing outside the text is ever read); its
    /// root must be libvirt's &lt;domain&gt;, in no namespace.</summary>
    private static XElement ParseSaved(string savedXml, string newName)
    {
        XDocument doc;
        try
        {
            var settings = new XmlReaderSettings { DtdProcessing = DtdProcessing.Prohibit, XmlResolver = null, MaxCharactersInDocument = MaxDefinitionChars };
            using var reader = XmlReader.Create(new StringReader(savedXml), settings);
            doc = XDocument.Load(reader);
        }
        catch (XmlException ex)
        {
            throw NotRestorable($"the saved domain.xml cannot be read: {ex.Message}", newName);
        }
        return doc.Root is { } root && root.Name == XName.Get("domain")
            ? root
            : throw NotRestorable($"the saved domain.xml's root is <{doc.Root?.Name.LocalName}>{(doc.Root?.Name.NamespaceName is { Length: > 0 } ns ? $" in the namespace {ns}" : "")}, not libvirt's <domain>", newName);
    }

    private static string VirtType(XElement saved, string newName) =>
        (string?)saved.Attribute("type") is "kvm" or "qemu" ? (string)saved.Attribute("type")! :
        throw NotRestorable($"the saved domain is of type '{(string?)saved.Attribute("type")}'; only kvm and qemu domains are rebuilt", newName);

    /// <summary>An arch or machine name, checked before it becomes a virsh argument.</summary>
    private static string? PlainName(string? value, string what, string newName) =>
        value is null || NamePattern().IsMatch(value) ? value : throw NotRestorable($"the saved {what} '{value}' is not a plain name", newName);

    private static string? Text(XElement? element) => element is null ? null : element.Value.Trim();

    private static BackupException NotRestorable(string why, string newName) =>
        new(ErrorIds.DomainXmlNotRestorable, BackupErrorCategory.InvalidData,
            $"The definition of '{newName}' cannot be made safely from the saved domain.xml: {why}.",
            "Restore the disks only (Restore-KvmBackup -Destination <folder> without -NewName) and define the VM by hand from domain.xml, leaving out what is named above.",
            newName);

    /// <summary>A name or number as libvirt's schema spells them: letters, digits and . _ : + - (spaces inside).</summary>
    [GeneratedRegex(@"^[A-Za-z0-9_.:+-]([A-Za-z0-9_.:+ -]{0,126}[A-Za-z0-9_.:+-])?$")]
    private static partial Regex PlainValuePattern();

    [GeneratedRegex(@"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")]
    private static partial Regex NamePattern();

    [GeneratedRegex(@"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$")]
    private static partial Regex TimeZonePattern();

    /// <summary>Builds one copy's &lt;domain&gt;; collects the notes, what was left out and the host files used.</summary>
    private sealed class Builder(XElement saved, DomainCopyRequest request, HostDomainFacts host)
    {
        private static readonly HashSet<string> RootParts = new(StringComparer.Ordinal)
        {
            "name", "uuid", "genid", "title", "description", "memory", "currentMemory", "vcpu", "cpu", "os", "features", "clock",
            "on_poweroff", "on_reboot", "on_crash", "on_lockfailure", "devices",
        };

        private static readonly HashSet<string> FeatureNames = new(StringComparer.Ordinal)
        {
            "acpi", "apic", "pae", "hap", "viridian", "privnet", "hyperv", "kvm", "pvspinlock", "vmport", "smm", "ioapic", "gic",
            "vmcoreinfo", "pmu", "msrs", "htm", "ccf-assist", "cfpc", "sbbc", "ibs", "async-teardown",
        };

        private readonly string _oldName = (string?)saved.Element("name") ?? "";
        private readonly List<string> _notes = new();
        private readonly List<string> _leftOut = new();
        private readonly HashSet<string> _hostFiles = new(StringComparer.Ordinal) { host.Emulator };

        public IReadOnlyList<string> Notes => _notes;
        public IReadOnlyList<string> LeftOut => _leftOut;
        public IReadOnlyCollection<string> HostFiles => _hostFiles;
        public bool HasGuestAgentChannel { get; private set; }
        public string? ConsoleLog { get; private set; }

        public XElement Build()
        {
            var domain = new XElement("domain", new XAttribute("type", VirtType(saved, request.NewName)), new XElement("name", request.NewName));
            foreach (var text in new[] { "title", "description" })
            {
                if (saved.Element(text) is { } element)
                    domain.Add(new XElement(text, new string(element.Value.Where(c => !char.IsControl(c) || c == '\n').Take(4096).ToArray())));
            }
            domain.Add(Memory("memory") ?? throw NotRestorable("the saved domain.xml gives no memory size", request.NewName));
            domain.Add(Memory("currentMemory"));
            if (saved.Element("vcpu") is { } vcpu)
            {
                domain.Add(new XElement("vcpu", Number(vcpu.Value) ?? throw NotRestorable($"<vcpu>{vcpu.Value}</vcpu> is not a number", request.NewName),
                    Number((string?)vcpu.Attribute("current")) is { } current ? new XAttribute("current", current) : null));
            }
            domain.Add(Cpu(), Os(), Features(), Clock());
            foreach (var (action, allowed) in new[]
            {
                ("on_poweroff", new[] { "destroy", "restart", "preserve", "rename-restart" }),
                ("on_reboot", new[] { "destroy", "restart", "preserve", "rename-restart" }),
                ("on_crash", new[] { "destroy", "restart", "preserve", "rename-restart", "coredump-destroy", "coredump-restart" }),
                ("on_lockfailure", new[] { "poweroff", "restart", "pause", "ignore" }),
            })
            {
                if (saved.Element(action) is { } element)
                    domain.Add(allowed.Contains(element.Value.Trim()) ? new XElement(action, element.Value.Trim()) : LeaveOut<XElement>(element, "not a known action"));
            }
            domain.Add(Devices());
            foreach (var part in saved.Elements().Where(e => e.Name.Namespace != XNamespace.None || !RootParts.Contains(e.Name.LocalName)))
                LeaveOut<XElement>(part, part.Name.LocalName switch
                {
                    _ when part.Name.Namespace != XNamespace.None => $"its namespace {part.Name.NamespaceName} is not libvirt's domain namespace",
                    "seclabel" => "the host's default security labels apply",
                    "metadata" => "application data of the set",
                    _ => "not among what a copy is built from",
                });
            return domain;
        }

        // ------------------------------------------------------------ domain-level parts

        private XElement? Memory(string name)
        {
            if (saved.Element(name) is not { } memory)
                return null;
            var unit = (string?)memory.Attribute("unit") ?? "KiB";
            if (Number(memory.Value) is not { } size || unit is not ("b" or "bytes" or "KB" or "k" or "KiB" or "MB" or "M" or "MiB" or "GB" or "G" or "GiB" or "TB" or "T" or "TiB"))
                throw NotRestorable($"<{name} unit='{unit}'>{memory.Value}</{name}> is not a memory size", request.NewName);
            return new XElement(name, new XAttribute("unit", unit), size);
        }

        /// <summary>host-model, host-passthrough or custom, with a model, vendor, topology and features: nothing that
        /// names a file.</summary>
        private XElement? Cpu()
        {
            if (saved.Element("cpu") is not { } cpu)
                return null;
            var mode = (string?)cpu.Attribute("mode") ?? "custom";
            if (mode is not ("host-model" or "host-passthrough" or "custom"))
                return LeaveOut<XElement>(cpu, $"CPU mode '{mode}' is not rebuilt; the host's default CPU applies");
            var built = new XElement("cpu", new XAttribute("mode", mode));
            CopyAttributes(cpu, built, "match", "check", "migratable");
            foreach (var part in Parts(cpu))
            {
                built.Add(part.Name.LocalName switch
                {
                    "model" when PlainValue(part.Value.Trim()) is { } model => Copy(part, new XElement("model", model), "fallback", "vendor_id"),
                    "vendor" when PlainValue(part.Value.Trim()) is { } vendor => new XElement("vendor", vendor),
                    "topology" => Copy(part, new XElement("topology"), "sockets", "dies", "clusters", "cores", "threads"),
                    "feature" => Copy(part, new XElement("feature"), "policy", "name"),
                    _ => LeaveOut<XElement>(part, "not part of a CPU model"),
                });
            }
            return built;
        }

        /// <summary>hvm with its arch, machine and boot order; firmware from the host; the VM's own boot files only.</summary>
        private XElement Os()
        {
            var os = saved.Element("os") ?? throw NotRestorable("the saved domain.xml has no <os>", request.NewName);
            var type = os.Element("type");
            if (type?.Value.Trim() != "hvm")
                throw NotRestorable($"the saved OS type is '{type?.Value.Trim()}'; only hvm guests are rebuilt", request.NewName);
            var built = new XElement("os", Copy(type, new XElement("type", "hvm"), "arch", "machine"));
            if ((string?)os.Attribute("firmware") is "efi" or "bios")
                built.SetAttributeValue("firmware", (string?)os.Attribute("firmware"));
            foreach (var part in Parts(os))
            {
                switch (part.Name.LocalName)
                {
                    case "type":
                        break;
                    case "loader":
                        Loader(part, built);
                        break;
                    case "nvram":
                        _notes.Add($"The NVRAM file of '{_oldName}' ({part.Value.Trim()}) is not used: libvirt makes a fresh one from the firmware's template (UEFI boot entries start from their defaults).");
                        break;
                    case "boot" when (string?)part.Attribute("dev") is "hd" or "cdrom" or "network" or "fd":
                        built.Add(new XElement("boot", new XAttribute("dev", (string)part.Attribute("dev")!)));
                        break;
                    case "bootmenu":
                        built.Add(Copy(part, new XElement("bootmenu"), "enable", "timeout"));
                        break;
                    case "kernel" or "initrd" or "dtb":
                        built.Add(new XElement(part.Name.LocalName, OwnBootFile(part)));
                        break;
                    case "cmdline":
                        break; // below, with the kernel it belongs to
                    default:
                        LeaveOut<XElement>(part, "not part of how a copy boots");
                        break;
                }
            }
            if (built.Element("kernel") is not null && os.Element("cmdline") is { } cmdline)
                built.Add(new XElement("cmdline", new string(cmdline.Value.Where(c => !char.IsControl(c)).Take(4096).ToArray())));
            return built;
        }

        /// <summary>Firmware the host offers (its domcapabilities list the file) is kept; any other is the host's
        /// choice: its UEFI firmware (firmware='efi') for a pflash loader, its default BIOS otherwise.</summary>
        private void Loader(XElement loader, XElement os)
        {
            var path = loader.Value.Trim();
            if (path.Length == 0 || host.Loaders.Contains(path, StringComparer.Ordinal))
            {
                var built = Copy(loader, new XElement("loader"), "readonly", "type", "secure");
                if (path.Length > 0)
                {
                    built.Add(path);
                    _hostFiles.Add(path);
                }
                os.Add(built);
                return;
            }
            var uefi = (string?)loader.Attribute("type") == "pflash";
            if (uefi)
                os.SetAttributeValue("firmware", "efi");
            else if ((string?)os.Attribute("firmware") == "efi")
                os.SetAttributeValue("firmware", null);
            _notes.Add($"The firmware of the set ({path}) is not one this host offers ({(host.Loaders.Count == 0 ? "virsh domcapabilities lists none" : string.Join(", ", host.Loaders))}): " +
                (uefi ? "libvirt chooses this host's UEFI firmware (firmware='efi')." : "this host's default BIOS is used."));
        }

        /// <summary>A kernel, initrd or dtb is a file of the host: kept only when the host's own definition of the VM
        /// uses that very file.</summary>
        private string OwnBootFile(XElement part)
        {
            var what = part.Name.LocalName;
            var path = part.Value.Trim();
            if (host.OwnBootFiles is not { } own)
                throw NotRestorable($"<{what}>{path}</{what}> names a file of the host, and this host has no definition of '{host.SourceDomain}' that could show it is that VM's own {what}", request.NewName);
            var ownPath = what switch { "kernel" => own.Kernel, "initrd" => own.Initrd, _ => own.Dtb };
            if (!string.Equals(ownPath, path, StringComparison.Ordinal))
                throw NotRestorable($"<{what}>{path}</{what}> is not the {what} that this host's own definition of '{host.SourceDomain}' uses ({ownPath ?? "none"})", request.NewName);
            _hostFiles.Add(path);
            return path;
        }

        private XElement? Features()
        {
            if (saved.Element("features") is not { } features)
                return null;
            var built = new XElement("features");
            foreach (var feature in Parts(features))
            {
                if (FeatureNames.Contains(feature.Name.LocalName))
                    built.Add(Plain(feature, depth: 2));
                else
                    LeaveOut<XElement>(feature, "not a known feature");
            }
            return built;
        }

        private XElement? Clock()
        {
            if (saved.Element("clock") is not { } clock)
                return null;
            var offset = (string?)clock.Attribute("offset") ?? "utc";
            if (offset is not ("utc" or "localtime" or "timezone" or "variable"))
                return LeaveOut<XElement>(clock, $"clock offset '{offset}' is not known");
            var built = new XElement("clock", new XAttribute("offset", offset));
            CopyAttributes(clock, built, "adjustment", "basis");
            if ((string?)clock.Attribute("timezone") is { } zone)
            {
                if (TimeZonePattern().IsMatch(zone))
                    built.SetAttributeValue("timezone", zone);
                else
                    LeaveOut<XElement>(clock, $"the time zone '{zone}' is not a zone name");
            }
            foreach (var timer in Parts(clock))
                built.Add(timer.Name.LocalName == "timer" ? Copy(timer, new XElement("timer"), "name", "track", "tickpolicy", "present", "frequency", "mode") : LeaveOut<XElement>(timer, "not a timer"));
            return built;
        }

        // ------------------------------------------------------------ devices

        private XElement Devices()
        {
            var devices = saved.Element("devices") ?? throw NotRestorable("the saved domain.xml has no <devices>", request.NewName);
            if (devices.Elements("hostdev").Any())
                throw NotRestorable($"'{_oldName}' has host devices (<hostdev>, PCI or USB passthrough): a copy started beside it would take them away from it", request.NewName);
            if (devices.Elements("filesystem").Any())
                throw NotRestorable($"'{_oldName}' shares host folders with its guest (<filesystem>): a copy would write into the same folders", request.NewName);
            var built = new XElement("devices", new XElement("emulator", host.Emulator));
            if (Text(devices.Element("emulator")) is { } emulator && emulator != host.Emulator)
                _leftOut.Add($"<emulator>{emulator}</emulator> of the set is not used: this host's {host.Emulator} runs the copy (virsh domcapabilities).");
            var disks = new HashSet<string>(StringComparer.Ordinal);
            var interfaces = 0;
            foreach (var device in Parts(devices))
            {
                switch (device.Name.LocalName)
                {
                    case "emulator" or "serial" or "console" or "channel":
                        break; // above, and below with the character devices
                    case "disk":
                        built.Add(Disk(device, disks));
                        break;
                    case "controller":
                        built.Add(Controller(device));
                        break;
                    case "interface":
                        interfaces++;
                        if (!request.DropInterfaces)
                            built.Add(Interface(device));
                        break;
                    case "input":
                        built.Add((string?)device.Attribute("type") is "mouse" or "keyboard" or "tablet" && (string?)device.Attribute("bus") is null or "ps2" or "usb" or "virtio"
                            ? WithAddress(device, Copy(device, new XElement("input"), "type", "bus"))
                            : LeaveOut<XElement>(device, "an input device of the host"));
                        break;
                    case "graphics":
                        built.Add(Graphics(device));
                        break;
                    case "video":
                        built.Add(Video(device));
                        break;
                    case "rng":
                        built.Add(Rng(device));
                        break;
                    case "memballoon" when (string?)device.Attribute("model") is "virtio" or "virtio-transitional" or "virtio-non-transitional" or "none":
                        built.Add(WithAddress(device, Copy(device, new XElement("memballoon"), "model", "autodeflate", "freePageReporting"),
                            device.Element("stats") is { } stats ? Copy(stats, new XElement("stats"), "period") : null));
                        break;
                    case "watchdog" when (string?)device.Attribute("model") is "i6300esb" or "ib700" or "diag288" or "itco":
                        built.Add(WithAddress(device, Copy(device, new XElement("watchdog"), "model", "action")));
                        break;
                    default:
                        LeaveOut<XElement>(device, "not among the devices a copy is built from");
                        break;
                }
            }
            if (request.DropInterfaces && interfaces > 0)
                _notes.Add($"{interfaces} network interface(s) left out: the copy has no network.");
            CharacterDevices(devices, built);
            var missing = request.Disks.Keys.Where(t => !disks.Contains(t)).ToList();
            if (missing.Count > 0)
                throw NotRestorable($"the saved definition of '{_oldName}' has no disk {string.Join(", ", missing)}, which the backup set holds", request.NewName);
            return built;
        }

        /// <summary>A disk of the set on its restored file or overlay (with the overlay's backing chain spelled out
        /// and ended); a CD-ROM or floppy ejected; any other disk left out.</summary>
        private XElement? Disk(XElement disk, HashSet<string> seen)
        {
            var device = (string?)disk.Attribute("device") ?? "disk";
            var target = disk.Element("target");
            var dev = (string?)target?.Attribute("dev") ?? "";
            var builtTarget = Copy(target, new XElement("target"), "dev", "bus", "removable", "rotation_rate");
            if (device is "cdrom" or "floppy")
            {
                if (disk.Element("source") is { } media)
                    _notes.Add($"{device} {dev}: ejected (it held {SourceText(media)}); insert media by hand if the copy needs it.");
                return WithAddress(disk, new XElement("disk", new XAttribute("type", "file"), new XAttribute("device", device),
                    new XElement("driver", new XAttribute("name", "qemu"), new XAttribute("type", "raw")), builtTarget,
                    device == "cdrom" ? new XElement("readonly") : null, BootOrder(disk)));
            }
            if (!request.Disks.TryGetValue(dev, out var file) || !seen.Add(dev))
            {
                _notes.Add($"Disk {dev} ({SourceText(disk.Element("source"))}) is not in the backup set: the copy has no {dev}.");
                return null;
            }
            if (device != "disk")
                _notes.Add($"Disk {dev} was a '{device}' device: the copy has it as a plain disk on its file.");
            var driver = new XElement("driver", new XAttribute("name", "qemu"), new XAttribute("type", file.Format));
            if (disk.Element("driver") is { } saved)
                CopyAttributes(saved, driver, "cache", "io", "discard", "detect_zeroes", "error_policy", "rerror_policy");
            XElement? chain = null;
            if (file.BackingFile is not null)
            {
                chain = new XElement("backingStore", new XAttribute("type", "file"), new XElement("format", new XAttribute("type", file.BackingFormat ?? "raw")),
                    new XElement("source", new XAttribute("file", file.BackingFile)), new XElement("backingStore"));
                _hostFiles.Add(file.BackingFile);
            }
            return WithAddress(disk, new XElement("disk", new XAttribute("type", "file"), new XAttribute("device", "disk"),
                driver, new XElement("source", new XAttribute("file", file.File)), chain, builtTarget,
                PlainValue(Text(disk.Element("serial"))) is { } serial ? new XElement("serial", serial) : null, BootOrder(disk)));
        }

        private XElement? Controller(XElement controller)
        {
            var type = (string?)controller.Attribute("type");
            if (type is not ("usb" or "pci" or "scsi" or "sata" or "ide" or "virtio-serial" or "fdc"))
                return LeaveOut<XElement>(controller, $"a '{type}' controller is not among those a copy is built with");
            var built = Copy(controller, new XElement("controller"), "type", "index", "model", "ports", "vectors");
            foreach (var part in Parts(controller))
            {
                built.Add(part.Name.LocalName switch
                {
                    "address" => Plain(part, 0),
                    "model" => Copy(part, new XElement("model"), "name"),
                    "target" => Copy(part, new XElement("target"), "chassisNr", "chassis", "port", "busNr", "index", "hotplug"),
                    "master" => Copy(part, new XElement("master"), "startport"),
                    _ => null,
                });
            }
            return built;
        }

        /// <summary>A restore's interface: on a libvirt network or a bridge by name, or user-mode; no MAC (libvirt
        /// makes a new one), no target, script or backend device of the original.</summary>
        private XElement? Interface(XElement nic)
        {
            var type = (string?)nic.Attribute("type");
            if (type is "vhostuser" or "hostdev")
                throw NotRestorable($"an interface of type '{type}' is tied to one host socket or device", request.NewName);
            var source = nic.Element("source");
            XElement? builtSource = type switch
            {
                "network" when PlainValue((string?)source?.Attribute("network")) is { } network => new XElement("source", new XAttribute("network", network)),
                "bridge" when PlainValue((string?)source?.Attribute("bridge")) is { } bridge => new XElement("source", new XAttribute("bridge", bridge)),
                _ => null,
            };
            if (type != "user" && builtSource is null)
            {
                _notes.Add($"A network interface of type '{type}' left out: a copy keeps only interfaces on a libvirt network or a bridge.");
                return null;
            }
            _notes.Add($"A network interface ({type}{(builtSource is null ? "" : " " + builtSource.Attributes().First().Value)}) kept, with a new MAC address; the guest still has the original's IP settings.");
            return WithAddress(nic, new XElement("interface", new XAttribute("type", type!), builtSource,
                nic.Element("model") is { } model ? Copy(model, new XElement("model"), "type") : null, BootOrder(nic)));
        }

        /// <summary>VNC or SPICE with a port libvirt chooses, listening on the loopback only (or nowhere).</summary>
        private XElement? Graphics(XElement graphics)
        {
            var type = (string?)graphics.Attribute("type");
            if (type is not ("vnc" or "spice"))
                return LeaveOut<XElement>(graphics, $"'{type}' graphics are not rebuilt");
            var built = Copy(graphics, new XElement("graphics"), "type", "keymap");
            built.SetAttributeValue("autoport", "yes");
            if (graphics.Elements("listen").Any(l => (string?)l.Attribute("type") == "none"))
            {
                built.Add(new XElement("listen", new XAttribute("type", "none")));
                return built;
            }
            var addresses = graphics.Elements("listen").Select(l => (string?)l.Attribute("address")).Append((string?)graphics.Attribute("listen")).OfType<string>().Distinct().ToList();
            if (addresses.Any(a => a != "127.0.0.1") || graphics.Attribute("socket") is not null || graphics.Elements("listen").Any(l => l.Attribute("socket") is not null))
                _notes.Add($"The {type} display listened on {string.Join(", ", addresses.Count == 0 ? ["a socket"] : addresses)}: the copy's listens on 127.0.0.1 only (reach it through an SSH tunnel).");
            built.Add(new XElement("listen", new XAttribute("type", "address"), new XAttribute("address", "127.0.0.1")));
            return built;
        }

        private XElement? Video(XElement video)
        {
            var model = video.Element("model");
            if ((string?)model?.Attribute("type") is not ("vga" or "cirrus" or "vmvga" or "qxl" or "virtio" or "bochs" or "ramfb" or "none"))
                return LeaveOut<XElement>(video, $"video model '{(string?)model?.Attribute("type")}' is not rebuilt");
            return WithAddress(video, new XElement("video", Copy(model, new XElement("model"), "type", "vram", "ram", "vgamem", "vram64", "heads", "primary")));
        }

        private XElement? Rng(XElement rng)
        {
            var backend = rng.Element("backend");
            var source = Text(backend);
            if ((string?)backend?.Attribute("model") != "random" || source is null || !RandomSources.Contains(source))
                return LeaveOut<XElement>(rng, "a random number generator is kept only on /dev/urandom or /dev/random");
            _hostFiles.Add(source);
            return WithAddress(rng, Copy(rng, new XElement("rng"), "model"), new XElement("backend", new XAttribute("model", "random"), source),
                rng.Element("rate") is { } rate ? Copy(rate, new XElement("rate"), "period", "bytes") : null);
        }

        /// <summary>
        /// Serial ports, consoles and channels. A boot test's serial ports and consoles all write to log files in the
        /// copy's folder. A restore keeps pty ones, and file or unix ones moved into its folder; the guest agent
        /// channel stays, its socket left for libvirt to make. Anything else (tcp, udp, pipe, a host device...) is
        /// left out.
        /// </summary>
        private void CharacterDevices(XElement devices, XElement built)
        {
            var serials = new Dictionary<string, XElement>(StringComparer.Ordinal);
            var index = 0;
            foreach (var serial in devices.Elements("serial"))
            {
                var port = (string?)serial.Element("target")?.Attribute("port") ?? index.ToString(System.Globalization.CultureInfo.InvariantCulture);
                if (CharacterDevice(serial, "serial", index++) is { } device)
                {
                    built.Add(device);
                    serials.TryAdd(port, device);
                }
            }
            index = 0;
            foreach (var console in devices.Elements("console"))
            {
                var target = console.Element("target");
                var port = (string?)target?.Attribute("port") ?? "0";
                // A serial console is the serial port of the same number: libvirt gives both one character device.
                if ((string?)target?.Attribute("type") is null or "serial" && serials.TryGetValue(port, out var serial))
                {
                    built.Add(new XElement("console", serial.Attribute("type"), serial.Element("source"),
                        new XElement("target", new XAttribute("type", "serial"), new XAttribute("port", port))));
                }
                else if (CharacterDevice(console, "console", index) is { } device)
                {
                    built.Add(device);
                }
                index++;
            }
            foreach (var channel in devices.Elements("channel"))
            {
                var target = channel.Element("target");
                if ((string?)channel.Attribute("type") == "unix" && (string?)target?.Attribute("type") == "virtio" && (string?)target?.Attribute("name") == DomainXml.GuestAgentChannelName)
                {
                    built.Add(WithAddress(channel, new XElement("channel", new XAttribute("type", "unix"),
                        new XElement("target", new XAttribute("type", "virtio"), new XAttribute("name", DomainXml.GuestAgentChannelName)))));
                    HasGuestAgentChannel = true;
                }
                else
                {
                    LeaveOut<XElement>(channel, "only the guest agent's channel is kept");
                }
            }
            foreach (var parallel in devices.Elements("parallel"))
                LeaveOut<XElement>(parallel, "parallel ports are not rebuilt");
        }

        private XElement? CharacterDevice(XElement device, string kind, int index)
        {
            var type = (string?)device.Attribute("type") ?? "pty";
            var target = device.Element("target");
            var builtTarget = Copy(target, new XElement("target"), "type", "port");
            if (target?.Element("model") is { } model)
                builtTarget.Add(Copy(model, new XElement("model"), "name"));
            string Own(string extension) => BackupNames.DeviceFilePath(request.DeviceFolder, request.NewName, kind, index, extension);
            XElement Built(string builtType, string? path, string? mode = null) => WithAddress(device, new XElement(kind, new XAttribute("type", builtType),
                path is null ? null : new XElement("source", mode is null ? null : new XAttribute("mode", mode), new XAttribute("path", path)), builtTarget));
            if (request.SerialToFile)
            {
                var log = Own("log");
                ConsoleLog ??= log;
                return Built("file", log);
            }
            if (device.Element("log") is not null)
                _leftOut.Add($"The log file of {kind} {index} is not kept.");
            return type switch
            {
                "pty" => Built("pty", null),
                "file" => Built("file", Own("log")),
                "unix" => Built("unix", Own("sock"), "bind"),
                _ => LeaveOut<XElement>(device, $"a '{type}' {kind} would reach outside the copy (only pty, file and unix ones are kept)"),
            };
        }

        // ------------------------------------------------------------ values

        /// <summary>The child elements in libvirt's namespace; any other is said to be left out.</summary>
        private IEnumerable<XElement> Parts(XElement parent)
        {
            foreach (var part in parent.Elements().ToList())
            {
                if (part.Name.Namespace == XNamespace.None)
                    yield return part;
                else
                    LeaveOut<XElement>(part, $"its namespace {part.Name.NamespaceName} is not libvirt's domain namespace");
            }
        }

        private static XElement? BootOrder(XElement device) =>
            Number((string?)device.Element("boot")?.Attribute("order")) is { } order ? new XElement("boot", new XAttribute("order", order)) : null;

        /// <summary>The built device with the saved device's guest address (a PCI slot, a drive unit) and more parts.</summary>
        private static XElement WithAddress(XElement saved, XElement built, params XElement?[] parts)
        {
            built.Add(parts);
            if (saved.Element("address") is { } address)
                built.Add(Plain(address, 0));
            return built;
        }

        /// <summary>Copies the named attributes whose values are plain names or numbers; others are not copied.</summary>
        private XElement Copy(XElement? from, XElement to, params string[] names)
        {
            if (from is not null)
                CopyAttributes(from, to, names);
            return to;
        }

        private void CopyAttributes(XElement from, XElement to, params string[] names)
        {
            foreach (var name in names)
            {
                if ((string?)from.Attribute(name) is not { } value)
                    continue;
                if (PlainValue(value) is { } plain)
                    to.SetAttributeValue(name, plain);
                else
                    _leftOut.Add($"<{from.Name.LocalName} {name}='{value}'>: not a plain value, left out.");
            }
        }

        /// <summary>An element with only plain attributes (any name), and its child elements down to
        /// <paramref name="depth"/> levels, in libvirt's namespace only: for features and guest addresses, which
        /// name no file.</summary>
        private static XElement Plain(XElement element, int depth)
        {
            var built = new XElement(element.Name.LocalName);
            foreach (var attribute in element.Attributes().Where(a => !a.IsNamespaceDeclaration && a.Name.Namespace == XNamespace.None))
            {
                if (NamePattern().IsMatch(attribute.Name.LocalName) && PlainValue(attribute.Value) is { } value)
                    built.SetAttributeValue(attribute.Name.LocalName, value);
            }
            if (depth > 0)
            {
                foreach (var child in element.Elements().Where(e => e.Name.Namespace == XNamespace.None))
                    built.Add(Plain(child, depth - 1));
            }
            return built;
        }

        private static string? PlainValue(string? value) => value is not null && PlainValuePattern().IsMatch(value) ? value : null;

        private static string? Number(string? value) =>
            value is not null && value.Trim() is { Length: > 0 and <= 20 } trimmed && trimmed.All(char.IsAsciiDigit) ? trimmed : null;

        /// <summary>Says that a part of the saved definition was left out, and why; returns null (nothing is built).</summary>
        private T? LeaveOut<T>(XElement part, string why) where T : class
        {
            var name = part.Name.Namespace == XNamespace.None ? part.Name.LocalName
                : (part.GetPrefixOfNamespace(part.Name.Namespace) is { } prefix ? prefix + ":" : "") + part.Name.LocalName;
            var type = (string?)part.Attribute("type");
            _leftOut.Add($"<{name}{(type is null ? "" : $" type='{type}'")}> of the saved definition left out: {why}.");
            return null;
        }

        private static string SourceText(XElement? source) =>
            source is null ? "no source" : (string?)source.Attribute("file") ?? (string?)source.Attribute("dev") ?? (string?)source.Attribute("name") ?? "a source";
    }
}
